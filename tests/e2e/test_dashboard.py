"""The live dashboard (`GET /dashboard` on the admin service) in headless Chromium.

Playwright drives Debian's Chromium (`/usr/bin/chromium`, or `MCP_E2E_CHROMIUM`); no
browser is downloaded. Set `MCP_E2E_SCREENSHOT=/path/file.png` to keep a screenshot of
the dashboard under traffic.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import free_port
from helpers import JSON_HEADERS
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path(os.environ.get("MCP_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test does)", pytrace=False)
    # Playwright gives every launch a fresh temporary profile (user data dir).
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page in a fresh browser context that records every request and console error."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.requests = []
        self.problems: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def close(self):
        self.context.close()

    def number(self, selector: str) -> float | None:
        text = self.page.locator(selector).inner_text().strip().replace(",", "").rstrip("%")
        try:
            return float(text)
        except ValueError:
            return None

    def wait_number(self, selector: str, predicate, what: str) -> float:
        """Poll a numeric element until `predicate(value)` holds (up to WAIT_MS)."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            value = self.number(selector)
            if value is not None and predicate(value):
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{selector} never became {what} (last: {self.page.locator(selector).inner_text()!r})")
            self.page.wait_for_timeout(100)

    def assert_same_origin(self, origin: str):
        others = [r.url for r in self.requests if not r.url.startswith(("data:", "about:")) and origin_of(r.url) != origin]
        assert not others, f"the dashboard fetched from other origins: {others}"

    def assert_clean_console(self):
        assert not self.problems, "\n".join(self.problems)


def origin_of(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def admin_block(port: int, token: str | None) -> str:
    return f"admin:\n  port: {port}\n" + (f"  token: {token}\n" if token else "")


def gateway_with_admin(stack, token: str | None) -> tuple[str, str, str]:
    """A gateway in front of the demo server: (proxy base URL, admin base URL, demo URL)."""
    upstream = stack.demo_server()
    admin_port = free_port()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=admin_block(admin_port, token))
    return gateway, f"http://127.0.0.1:{admin_port}", upstream


def rpc(client: httpx.Client, url: str, id_: int, method: str, params: dict | None = None) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        body["params"] = params
    return client.post(url, headers=JSON_HEADERS, json=body, timeout=30)


class Traffic:
    """Steady client traffic through the gateway from a background thread: `tools/call`s
    of `echo` and, every fifth request, a body that is not JSON (a gateway error)."""

    def __init__(self, url: str):
        self.url = url
        self.stop_event = threading.Event()
        self.sent = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client() as client:
            while not self.stop_event.is_set() and self.sent < 2000:
                self.sent += 1
                try:
                    if self.sent % 5 == 0:
                        r = client.post(self.url, headers=JSON_HEADERS, content=b"{not json", timeout=30)
                        if r.status_code != 400:
                            self.errors.append(f"bad body: {r.status_code} {r.text[:200]}")
                    else:
                        r = rpc(client, self.url, self.sent, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
                        if r.status_code != 200:
                            self.errors.append(f"tools/call: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))
                self.stop_event.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.errors, self.errors[:5]


def test_dashboard_shows_live_numbers(stack, browser):
    token = secrets.token_hex(16)
    gateway, admin, upstream = gateway_with_admin(stack, token)
    mcp = f"{gateway}/mcp"
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{admin}/dashboard#token={token}")

        # The configured upstream, up with its breaker closed.
        row = page.locator('#upstreams tr[data-server="default/s1"]')
        expect(row).to_be_visible()
        expect(row.locator("td.state")).to_have_text("up")
        expect(row.locator("td.breaker")).to_have_text("closed")
        expect(row).to_have_attribute("data-breaker", "closed")
        expect(row.locator("td.url")).to_contain_text(upstream)
        expect(page.locator("#auth-error")).to_be_hidden()
        expect(page.locator("#net-error")).to_be_hidden()
        # No virtual servers configured: no panel for them.
        expect(page.locator("#virtual-servers-panel")).to_be_hidden()
        # The fragment was read and removed from the address bar; the token is kept in
        # this tab's sessionStorage.
        assert token not in page.url, page.url
        assert token in page.evaluate("JSON.stringify(Object.values(sessionStorage))")

        before = tab.wait_number("#total-requests", lambda n: n >= 0, "a number")

        with httpx.Client() as client:
            # One tools/list first: the gateway learns the tool names from its answer.
            listed = rpc(client, mcp, 1, "tools/list")
            assert listed.status_code == 200, listed.text
        with Traffic(mcp) as traffic:
            tab.wait_number("#total-requests", lambda n: n >= before + 20, f"at least {before + 20:.0f}")
            tab.wait_number("#req-rate", lambda r: r > 0, "> 0")
            tab.wait_number("#gateway-errors-rate", lambda r: r > 0, "> 0")
            echo = page.locator('#top-tools tr[data-tool="default/echo"]')
            expect(echo.locator("td.tool")).to_have_text("echo")
            tab.wait_number('#top-tools tr[data-tool="default/echo"] td.calls', lambda n: n >= 5, ">= 5")
            tab.wait_number('#upstreams tr[data-server="default/s1"] td.requests', lambda n: n >= 5, ">= 5")
            expect(page.locator("#error-rate")).to_have_text("0%")  # the 400s are not 5xx
            expect(page.locator("#p50")).not_to_have_text("–")
            expect(page.locator("#p99")).not_to_have_text("–")
            for gauge in ("#connections", "#streams", "#sessions"):
                assert tab.number(gauge) is not None, (gauge, page.locator(gauge).inner_text())
            shot = os.environ.get("MCP_E2E_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
        assert traffic.sent >= 20

        # Traffic over: the rate falls back to zero (the dashboard's own polls are not
        # proxied traffic).
        expect(page.locator("#req-rate")).to_have_text("0")

        # Every request went to the admin origin; the API calls carried the token in the
        # Authorization header and nowhere else.
        tab.assert_same_origin(admin)
        api = [r for r in tab.requests if urlsplit(r.url).path == "/api/v1/summary"]
        assert len(api) >= 3, [r.url for r in tab.requests]
        for r in api:
            assert r.headers.get("authorization") == f"Bearer {token}", r.headers
        for r in tab.requests:
            assert token not in r.url, r.url
        tab.assert_clean_console()

        # The gateway goes away: the page says so (and keeps the last numbers).
        next(p for p in stack.procs if p.name == "gateway").stop()
        expect(page.locator("#net-error")).to_be_visible()
        expect(page.locator("#net-error")).to_contain_text("unreachable")
        expect(row).to_be_visible()
    finally:
        tab.close()


def test_dashboard_asks_for_the_token(stack, browser):
    token = secrets.token_hex(16)
    _, admin, _ = gateway_with_admin(stack, token)

    # No token: the page asks for one and calls nothing.
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{admin}/dashboard")
        expect(page.locator("#auth-error")).to_be_visible()
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#dash")).to_be_hidden()
        assert not [r for r in tab.requests if "/api/" in r.url], [r.url for r in tab.requests]

        # A wrong token through the form: 401, said plainly.
        page.fill("#token-input", "not-the-admin-token")
        page.press("#token-input", "Enter")
        expect(page.locator("#auth-error")).to_contain_text("401")
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#dash")).to_be_hidden()

        # The right one: the dashboard loads, and survives a reload (sessionStorage).
        page.fill("#token-input", token)
        page.press("#token-input", "Enter")
        expect(page.locator('#upstreams tr[data-server="default/s1"]')).to_be_visible()
        expect(page.locator("#auth-error")).to_be_hidden()
        page.reload()
        expect(page.locator('#upstreams tr[data-server="default/s1"]')).to_be_visible()
        expect(page.locator("#auth-error")).to_be_hidden()
        tab.assert_same_origin(admin)
    finally:
        tab.close()

    # A wrong token in the fragment, in a fresh tab.
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{admin}/dashboard#token=wrong-token-0123456789")
        expect(page.locator("#auth-error")).to_be_visible()
        expect(page.locator("#auth-error")).to_contain_text(re.compile("wrong admin token", re.I))
        expect(page.locator("#dash")).to_be_hidden()
        assert page.evaluate("sessionStorage.length") == 0
        tab.assert_same_origin(admin)
    finally:
        tab.close()


def test_dashboard_without_admin_token_configured(stack, browser):
    """No `admin.token`: the API answers 403 and the page says the API is disabled."""
    _, admin, _ = gateway_with_admin(stack, None)
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{admin}/dashboard#token=whatever-0123456789")
        expect(page.locator("#auth-error")).to_be_visible()
        expect(page.locator("#auth-error")).to_contain_text("403")
        expect(page.locator("#dash")).to_be_hidden()
        tab.assert_same_origin(admin)
    finally:
        tab.close()


def test_dashboard_shows_virtual_servers(stack, browser):
    """A virtual server's members, their state and catalog sizes (docs/federation.md): a
    member that fails is shown degraded until it answers again."""
    token = secrets.token_hex(16)
    files = stack.demo_server("files")
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    admin_port = free_port()
    extra = admin_block(admin_port, token) + (
        "virtual_servers:\n"
        "  - path: /mcp\n"
        "    members: [{group: files}, {group: gone, prefix: g}]\n"
    )
    gateway = stack.gateway({"files": {"servers": [files]}, "gone": {"servers": [dead]}}, extra=extra)
    admin = f"http://127.0.0.1:{admin_port}"
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{admin}/dashboard#token={token}")
        with httpx.Client() as client:
            init = rpc(client, f"{gateway}/mcp", 1, "initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}})
            assert init.status_code == 200, init.text
            session = {"Mcp-Session-Id": init.headers["mcp-session-id"], **JSON_HEADERS}
            listed = client.post(f"{gateway}/mcp", headers=session, timeout=30,
                                 json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            assert listed.status_code == 200, listed.text
            tools = len(listed.json()["result"]["tools"])
            assert tools > 0, listed.text
        expect(page.locator("#virtual-servers-panel")).to_be_visible()
        ok = page.locator('#virtual-servers tr[data-member="/mcp/files"]')
        expect(ok.locator("td.state")).to_have_text("ok")
        tab.wait_number('#virtual-servers tr[data-member="/mcp/files"] td.tools', lambda n: n == tools, f"{tools}")
        gone = page.locator('#virtual-servers tr[data-member="/mcp/g"]')
        expect(gone.locator("td.state")).to_have_text("degraded")
        expect(page.locator("#virtual-servers-sub")).to_contain_text("1/2 members ok")
        tab.assert_clean_console()
    finally:
        tab.close()
