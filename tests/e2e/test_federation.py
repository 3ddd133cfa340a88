"""Virtual servers (`virtual_servers:`): one MCP endpoint whose catalog is the union of its
members' (upstream groups), against real peers and real clients.

The gateway is the MCP server to the client and an MCP client to each member. Tool and
prompt names become `<prefix>__<name>`; resource URIs get the prefix right after the
scheme (`file:///a.txt` -> `file://files+/a.txt`, `mem:x` -> `mem:files+x`); calls go to
the member that owns the prefix, with the name or URI as the member spells it.

Peers: two or more peers/catalog_server.py (Python SDK 2.x, both eras), the reference
`server-everything` (TypeScript SDK, legacy, stateful) for paging, server->client requests
and its GET stream. Clients: the Python SDK `Client` (`legacy` and `auto`), the TypeScript
SDK client (peers/ts_client.mjs), raw httpx where the wire matters.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest
from conftest import E2E
from helpers import JSON_HEADERS, ProgressLog, jsonrpc_messages, run, text_of, wait_for_tool
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageResult,
    ElicitResult,
    EmbeddedResource,
    ListRootsResult,
    PromptReference,
    ResourceLink,
    Root,
    TextContent,
)

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
MODES = ["auto", "legacy"]
NAME = "federated-e2e"

CATALOG_TOOLS = {"echo", "fetch", "fetch_raw", "link", "embed", "whoami", "calls", "slow", "ask", "think", "client_roots", "initializations", "touch"}
CATALOG_PROMPTS = {"greet", "summarize"}
CATALOG_RESOURCES = {"file:///readme.txt", "file:///notes/todo.txt", "mem:scratch", "ui://panel"}
CATALOG_TEMPLATES = {"file:///{path}"}


# ---- configuration -------------------------------------------------------------------


def vs_yaml(members: list[dict], *, path: str = "/mcp", name: str = NAME, extra: str = "", **settings) -> str:
    """A `virtual_servers:` section with one virtual server (plus `extra` top-level YAML).

    `members` are dicts as in the config (`{"group": "web", "prefix": "w", "tools": {...}}`),
    `settings` more keys of the virtual server (`on_member_failure="fail_closed"`)."""
    server = {"path": path, "name": name, "members": members, **settings}
    # JSON is YAML: one flow mapping per virtual server.
    return f"virtual_servers:\n  - {json.dumps(server)}\n" + textwrap.dedent(extra)


def session_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def two_catalogs(stack, web_prefix: str = "w", **settings) -> tuple[str, str, str]:
    """Catalog peers `files` (prefix `files`) and `web` (prefix `w`, tools `fetch*` and `echo`
    but not `fetch_raw`) behind one virtual server on /mcp; returns (gateway, files, web)."""
    files = stack.catalog_server("files")
    web = stack.catalog_server("web")
    extra = settings.pop("extra", "")
    web_yaml = settings.pop("web_yaml", "")
    members = [
        {"group": "files"},
        {"group": "web", "prefix": web_prefix, "tools": {"include": ["fetch*", "echo"], "exclude": ["fetch_raw"]}},
    ]
    gateway = stack.gateway(
        {"files": {"servers": [files]}, "web": {"servers": [web], "yaml": web_yaml}},
        extra=vs_yaml(members, extra=extra, **settings),
    )
    return gateway, files, web


def web_tools(prefix: str = "w") -> set[str]:
    """What the `web` member of `two_catalogs` lists."""
    return {f"{prefix}__fetch", f"{prefix}__echo"}


WEB_TOOLS = web_tools()
FILES_TOOLS = {f"files__{t}" for t in CATALOG_TOOLS}


def prefixed_uri(uri: str, prefix: str) -> str:
    """What the gateway makes of a member's URI: the prefix and `+` right after the scheme
    (after `//` when the URI has an authority part)."""
    scheme, rest = uri.split(":", 1)
    if rest.startswith("//"):
        return f"{scheme}://{prefix}+{rest[2:]}"
    return f"{scheme}:{prefix}+{rest}"


def test_prefixed_uri_examples():
    """The examples of the wire contract, so the helper above says what the gateway does."""
    assert prefixed_uri("file:///a.txt", "files") == "file://files+/a.txt"
    assert prefixed_uri("ui://x", "files") == "ui://files+x"
    assert prefixed_uri("mem:abc", "files") == "mem:files+abc"


# ---- clients -------------------------------------------------------------------------


def client(gateway: str, mode: str, path: str = "/mcp", **kw) -> Client:
    """The Python SDK client, without its response cache (lists here change under it)."""
    return Client(f"{gateway}{path}", mode=mode, read_timeout_seconds=30, cache=None, **kw)


async def all_pages(list_page, attr: str) -> tuple[list, int]:
    """Every item of a paginated list (following `nextCursor`) and the number of pages."""
    items, cursor, pages = [], None, 0
    while True:
        page = await list_page(cursor=cursor)
        pages += 1
        items += getattr(page, attr)
        cursor = page.next_cursor
        if not cursor:
            return items, pages
        assert pages < 100, "nextCursor never ends"


def error_of(response: httpx.Response) -> dict:
    """The JSON-RPC error object of a response (JSON or SSE)."""
    [message] = [m for m in jsonrpc_messages(response) if "id" in m and ("result" in m or "error" in m)]
    assert "error" in message, f"expected a JSON-RPC error, got {message}"
    return message["error"]


class Legacy:
    """A raw legacy-era (2025-11-25) session over httpx: `initialize`, then every request with
    the `Mcp-Session-Id` the gateway returned. `url=` sends one request elsewhere (another
    gateway sharing the session keys)."""

    def __init__(self, url: str, http: httpx.Client | None = None):
        self.url = url
        self.http = http or httpx.Client(timeout=30)
        self.session_id: str | None = None
        self.next_id = 1

    def headers(self, session_id: str | None = None) -> dict:
        h = dict(JSON_HEADERS)
        sid = session_id or self.session_id
        if sid:
            h["Mcp-Session-Id"] = sid
            h["MCP-Protocol-Version"] = LEGACY
        return h

    def post(self, message: dict, *, url: str | None = None, session_id: str | None = None) -> httpx.Response:
        response = self.http.post(url or self.url, json=message, headers=self.headers(session_id))
        renewed = response.headers.get("mcp-session-id")
        if renewed and session_id is None and response.status_code < 300:
            # A renewed id (a member was initialized again): take it, as the SDK clients do.
            self.session_id = renewed
        return response

    def request(self, method: str, params: dict | None = None, **kw) -> httpx.Response:
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            message["params"] = params
        return self.post(message, **kw)

    def result(self, method: str, params: dict | None = None, **kw) -> dict:
        response = self.request(method, params, **kw)
        assert response.status_code == 200, f"{method}: {response.status_code} {response.text[:2000]}"
        [message] = [m for m in jsonrpc_messages(response) if "result" in m or "error" in m]
        assert "result" in message, f"{method}: {message}"
        return message["result"]

    def initialize(self, capabilities: dict | None = None, **kw) -> dict:
        response = self.request(
            "initialize",
            {
                "protocolVersion": LEGACY,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "raw-e2e", "version": "1.0"},
            },
            **kw,
        )
        assert response.status_code == 200, f"initialize: {response.status_code} {response.text[:2000]}"
        self.session_id = response.headers.get("mcp-session-id")
        assert self.session_id, f"initialize returned no Mcp-Session-Id: {response.headers}"
        [message] = jsonrpc_messages(response)
        return message["result"]

    def initialized(self, **kw) -> httpx.Response:
        return self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, **kw)

    def close(self) -> None:
        self.http.close()


def modern_post(url: str, method: str, params: dict | None = None, *, name: str | None = None, id: int = 1) -> httpx.Response:
    """A raw 2026-07-28 request: the version in `_meta` and in the headers, no session."""
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {**JSON_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return httpx.post(url, json={"jsonrpc": "2.0", "id": id, "method": method, "params": params}, headers=headers, timeout=30)


def tampered(token: str) -> str:
    """`token` with one character in the middle changed (to another URL-safe one)."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


# ---- the merged catalog ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_lists_are_merged_and_prefixed(stack, mode):
    gateway, _, _ = two_catalogs(stack)

    async def body():
        async with client(gateway, mode) as c:
            if mode == "auto":
                # Both members speak 2026-07-28: the gateway's server/discover says so.
                assert c.protocol_version == MODERN
            else:
                assert c.protocol_version < MODERN
            assert c.server_info is not None and c.server_info.name == NAME, c.server_info

            tools, _ = await all_pages(c.list_tools, "tools")
            names = [t.name for t in tools]
            assert sorted(names) == sorted(FILES_TOOLS | WEB_TOOLS)
            # The member's schema and description travel with the renamed tool.
            echo = next(t for t in tools if t.name == "w__echo")
            assert "text" in echo.input_schema["properties"], echo

            prompts, _ = await all_pages(c.list_prompts, "prompts")
            assert sorted(p.name for p in prompts) == sorted(
                {f"files__{p}" for p in CATALOG_PROMPTS} | {f"w__{p}" for p in CATALOG_PROMPTS}
            )
            greet = next(p for p in prompts if p.name == "files__greet")
            assert [a.name for a in greet.arguments or []] == ["name"]

            resources, _ = await all_pages(c.list_resources, "resources")
            uris = [r.uri for r in resources]
            assert sorted(uris) == sorted(
                {prefixed_uri(u, "files") for u in CATALOG_RESOURCES} | {prefixed_uri(u, "w") for u in CATALOG_RESOURCES}
            )
            assert {"file://files+/readme.txt", "mem:w+scratch", "ui://files+panel"} <= set(uris)

            templates, _ = await all_pages(c.list_resource_templates, "resource_templates")
            assert sorted(t.uri_template for t in templates) == ["file://files+/{path}", "file://w+/{path}"]

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_calls_are_routed_by_prefix(stack, mode):
    gateway, _, _ = two_catalogs(stack)

    async def body():
        async with client(gateway, mode) as c:
            assert text_of(await c.call_tool("files__whoami", {})) == "files"
            assert text_of(await c.call_tool("files__echo", {"text": "héllo ✓"})) == "héllo ✓"
            assert text_of(await c.call_tool("w__echo", {"text": "to web"})) == "to web"
            assert text_of(await c.call_tool("w__fetch", {"url": "https://example.com/"})) == (
                "web fetched https://example.com/"
            )
            assert text_of(await c.call_tool("files__fetch", {"url": "x"})) == "files fetched x"

            prompt = await c.get_prompt("w__greet", {"name": "Ada"})
            [message] = prompt.messages
            assert message.content.text == "Hello, Ada!"
            prompt = await c.get_prompt("files__summarize", {"topic": "MCP"})
            assert prompt.messages[0].content.text == "Summarize MCP."

            completion = await c.complete(PromptReference(name="files__greet"), {"name": "name", "value": "al"})
            assert completion.completion.values == ["alice", "albert"]

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_resources_read_and_uris_in_results(stack, mode):
    gateway, _, _ = two_catalogs(stack)

    async def body():
        async with client(gateway, mode) as c:
            for uri, text in [
                ("file://files+/readme.txt", "readme of files"),
                ("file://w+/readme.txt", "readme of web"),
                ("file://w+/notes/todo.txt", "todo of web"),
                ("mem:files+scratch", "scratch of files"),
                ("ui://w+panel", "<p>panel of web</p>"),
                # Through the template file:///{path}.
                ("file://files+/report.txt", "files file report.txt"),
            ]:
                result = await c.read_resource(uri)
                [content] = result.contents
                assert content.text == text, (uri, content)
                assert content.uri == uri, f"the contents of {uri} came back as {content.uri}"

            # A resource_link in a tool result points at the prefixed URI, and reading it works.
            result = await c.call_tool("files__link", {"path": "a.txt"})
            assert not result.is_error, result
            [link] = [b for b in result.content if isinstance(b, ResourceLink)]
            assert link.uri == "file://files+/a.txt", link
            [content] = (await c.read_resource(link.uri)).contents
            assert content.text == "files file a.txt"

            # So does an embedded resource's.
            result = await c.call_tool("files__embed", {"path": "b.txt"})
            [embedded] = [b for b in result.content if isinstance(b, EmbeddedResource)]
            assert embedded.resource.uri == "file://files+/b.txt", embedded
            assert embedded.resource.text == "files: b.txt"

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_progress_is_streamed_through(stack, mode):
    gateway, _, _ = two_catalogs(stack)

    async def body():
        async with client(gateway, mode) as c:
            progress = ProgressLog()
            result = await c.call_tool("files__slow", {"steps": 4}, progress_callback=progress)
            finished = time.monotonic() - progress.start
            assert text_of(result) == "done"
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3, 4], progress.events
            assert all(total == 4 for _, _, total, _ in progress.events)
            # Streamed, not buffered: the first step (0.3 s in) arrives ~0.9 s before the result.
            first = progress.events[0][0]
            assert finished - first > 0.6, f"progress arrived late: first at {first:.2f}s, result at {finished:.2f}s"
            # The session (or the stateless endpoint) works after the stream.
            assert text_of(await c.call_tool("w__echo", {"text": "after"})) == "after"

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_tool_filters_at_list_and_call_time(stack, mode):
    gateway, _, web = two_catalogs(stack)

    async def body():
        async with client(gateway, mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "files__fetch_raw" in names
            assert "w__fetch_raw" not in names, "excluded tool listed"
            assert "w__whoami" not in names, "tool outside tools.include listed"

            assert text_of(await c.call_tool("files__fetch_raw", {"url": "u"})) == "files fetched raw u"
            for hidden in ["w__fetch_raw", "w__whoami"]:
                with pytest.raises(MCPError) as refused:
                    await c.call_tool(hidden, {"url": "u"})
                assert refused.value.error.code == -32602, (hidden, refused.value.error)

        # The web member served none of the refused calls (`calls` is not included for w,
        # so ask the member directly).
        async with Client(web, mode="legacy", read_timeout_seconds=30) as direct:
            assert text_of(await direct.call_tool("calls", {})) == "0"

    run(body)


def test_unknown_prefix_and_unknown_tool_name_the_prefixes(stack):
    gateway, _, _ = two_catalogs(stack, web_prefix="remote")
    raw = Legacy(f"{gateway}/mcp")
    raw.initialize()
    assert raw.initialized().status_code == 202
    try:
        for name in ["nope__echo", "echo", "remote__fetch_raw", "remote__whoami"]:
            response = raw.request("tools/call", {"name": name, "arguments": {"text": "x"}})
            assert response.status_code == 200, (name, response.status_code, response.text)
            error = error_of(response)
            assert error["code"] == -32602, (name, error)
            if "__" not in name or name.startswith("nope"):
                assert "files" in error["message"] and "remote" in error["message"], (name, error)
        # A prompt of an unknown member too.
        response = raw.request("prompts/get", {"name": "nope__greet", "arguments": {"name": "x"}})
        assert response.status_code == 200 and error_of(response)["code"] == -32602, response.text
        # A tool the member does not have: refused one way or the other, never a success.
        response = raw.request("tools/call", {"name": "files__no_such_tool", "arguments": {}})
        assert response.status_code == 200, response.text
        [message] = jsonrpc_messages(response)
        assert "error" in message or message["result"].get("isError") is True, message
    finally:
        raw.close()

    # The same refusal in the modern era.
    response = modern_post(f"{gateway}/mcp", "tools/call", {"name": "nope__echo", "arguments": {}}, name="nope__echo")
    assert response.status_code == 200, response.text
    error = error_of(response)
    assert error["code"] == -32602 and "files" in error["message"] and "remote" in error["message"], error


def test_modern_discover_and_stateless_requests(stack):
    """Raw 2026-07-28 requests: the gateway answers `server/discover` itself, later requests
    carry no session and are routed by the prefix in `params.name` (and `Mcp-Name`)."""
    gateway, _, _ = two_catalogs(stack)
    url = f"{gateway}/mcp"
    response = modern_post(url, "server/discover")
    assert response.status_code == 200, response.text
    [message] = jsonrpc_messages(response)
    discover = message["result"]
    assert MODERN in discover["supportedVersions"], discover
    info = discover.get("serverInfo") or discover.get("_meta", {}).get("io.modelcontextprotocol/serverInfo")
    assert info and info["name"] == NAME, discover
    assert {"tools", "prompts", "resources"} <= set(discover["capabilities"]), discover
    assert "mcp-session-id" not in response.headers

    response = modern_post(url, "tools/list", id=2)
    assert response.status_code == 200, response.text
    [message] = jsonrpc_messages(response)
    assert {t["name"] for t in message["result"]["tools"]} == FILES_TOOLS | WEB_TOOLS

    params = {"name": "w__echo", "arguments": {"text": "stateless"}}
    response = modern_post(url, "tools/call", params, name="w__echo", id=3)
    assert response.status_code == 200, response.text
    [message] = [m for m in jsonrpc_messages(response) if "result" in m or "error" in m]
    assert message["result"]["content"][0]["text"] == "stateless", message

    response = modern_post(url, "resources/read", {"uri": "mem:w+scratch"}, name="mem:w+scratch", id=4)
    assert response.status_code == 200, response.text
    [message] = [m for m in jsonrpc_messages(response) if "result" in m or "error" in m]
    assert message["result"]["contents"][0]["text"] == "scratch of web", message

    # A header that disagrees with the body is refused, not routed by either.
    response = modern_post(url, "tools/call", params, name="files__echo", id=5)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == -32020, response.text


# ---- legacy session details ---------------------------------------------------------------


def test_legacy_initialize_ping_and_delete(stack):
    gateway, _, _ = two_catalogs(stack)
    raw = Legacy(f"{gateway}/mcp")
    try:
        result = raw.initialize()
        assert result["serverInfo"]["name"] == NAME, result
        assert result["protocolVersion"] == LEGACY, result
        # The union of the members' capabilities.
        assert {"tools", "prompts", "resources", "completions"} <= set(result["capabilities"]), result
        assert raw.initialized().status_code == 202
        assert raw.result("ping") == {}
        assert {t["name"] for t in raw.result("tools/list")["tools"]} >= {"files__echo", "w__echo"}

        deleted = raw.http.delete(raw.url, headers=raw.headers())
        assert deleted.status_code in (200, 204), deleted.text
    finally:
        raw.close()


def test_deleted_session_is_not_served(stack):
    """After DELETE the session is over (the members' sessions are ended): its id gets 404
    and the client starts a new session, rather than the old id being served again."""
    gateway, _, _ = two_catalogs(stack)
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        assert raw.result("tools/list")["tools"]
        deleted = raw.http.delete(raw.url, headers=raw.headers())
        assert deleted.status_code in (200, 204), deleted.text
        after = raw.request("tools/list")
        assert after.status_code == 404, f"the deleted session still answers: {after.status_code} {after.text[:300]}"
        assert error_of(after)["code"], after.text
    finally:
        raw.close()


def test_concurrent_requests_in_one_session(stack):
    """Several lists and calls in flight at once in one legacy session (what an SDK client does
    when it validates tool results): each gets its own answer, with its own id."""
    gateway, _, _ = two_catalogs(stack)
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        messages = [{"jsonrpc": "2.0", "id": 100 + i, "method": "tools/list"} for i in range(4)]
        messages += [{"jsonrpc": "2.0", "id": 200 + i, "method": "resources/list"} for i in range(2)]
        messages += [
            {"jsonrpc": "2.0", "id": 300 + i, "method": "tools/call", "params": {"name": "files__echo", "arguments": {"text": f"c{i}"}}}
            for i in range(2)
        ]

        def send(message):
            response = raw.http.post(raw.url, json=message, headers=raw.headers(), timeout=15)
            return message["id"], response.status_code, [m.get("id") for m in jsonrpc_messages(response)]

        with ThreadPoolExecutor(len(messages)) as pool:
            answers = list(pool.map(send, messages))
        for sent, status, ids in answers:
            assert status == 200 and ids == [sent], (sent, status, ids)
    finally:
        raw.close()


def test_tampered_or_foreign_session_id_is_404(stack):
    gateway, _, _ = two_catalogs(stack, extra=f'sessions:\n  keys: ["{session_key()}"]\n')
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        sealed = raw.session_id
        for bad in [tampered(sealed), "not-a-session-id", sealed[:-4]]:
            response = raw.request("tools/list", session_id=bad)
            assert response.status_code == 404, (bad, response.status_code, response.text)
            assert response.json()["error"]["code"] == -32001, response.text
        # The real session is untouched.
        assert {t["name"] for t in raw.result("tools/list")["tools"]} >= {"files__echo"}
    finally:
        raw.close()


# ---- pagination ------------------------------------------------------------------------


def everything_resources(url: str) -> list[str]:
    """server-everything's resources, asked directly (every page)."""

    async def body():
        async with Client(url, mode="legacy", read_timeout_seconds=30) as direct:
            items, _ = await all_pages(direct.list_resources, "resources")
            return [r.uri for r in items]

    return anyio.run(body)


@pytest.mark.parametrize("max_page_size", [None, 1024, 0])
def test_pagination_with_server_everything(stack, max_page_size):
    """Following `nextCursor` through the virtual server yields every resource of every member
    exactly once, prefixed, whether the gateway merges the pages (the default size limit) or
    hands them out one member page at a time (`max_page_size` 1KiB, or 0)."""
    everything = stack.everything_server()
    files = stack.catalog_server("files", page_size=3, extra_resources=12)
    direct = everything_resources(everything)
    assert len(direct) >= 3, direct
    settings = {"max_page_size": max_page_size} if max_page_size is not None else {}
    gateway = stack.gateway(
        {"ev": {"servers": [everything]}, "files": {"servers": [files]}},
        extra=vs_yaml([{"group": "ev"}, {"group": "files"}], **settings),
    )
    expected = sorted(
        [prefixed_uri(u, "ev") for u in direct]
        + [prefixed_uri(u, "files") for u in CATALOG_RESOURCES]
        + [f"file://files+/extra-{i}.txt" for i in range(12)]
    )

    async def body():
        async with client(gateway, "legacy") as c:
            items, pages = await all_pages(c.list_resources, "resources")
            uris = [r.uri for r in items]
            assert sorted(uris) == expected, f"{len(uris)} listed in {pages} pages, {len(expected)} expected"
            if max_page_size is not None:
                # The catalog member alone has 6 pages of 3.
                assert pages > 2, pages
            # Every listed URI reads back through the gateway.
            for uri in [uris[0], uris[-1], "file://files+/extra-11.txt"]:
                result = await c.read_resource(uri)
                assert result.contents and result.contents[0].uri == uri, (uri, result)

    run(body)


def test_tampered_cursor_is_invalid_params(stack):
    everything = stack.everything_server()
    files = stack.catalog_server("files", page_size=3, extra_resources=12)
    gateway = stack.gateway(
        {"ev": {"servers": [everything]}, "files": {"servers": [files]}},
        extra=vs_yaml([{"group": "ev"}, {"group": "files"}], max_page_size=1024),
    )
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        first = raw.result("resources/list")
        cursor = first.get("nextCursor")
        assert cursor, f"no nextCursor with max_page_size 1KiB: {first}"
        second = raw.result("resources/list", {"cursor": cursor})
        assert second["resources"], second
        for bad in [tampered(cursor), cursor[:-3], "bm90LWEtY3Vyc29y", "?"]:
            response = raw.request("resources/list", {"cursor": bad})
            assert response.status_code == 200, (bad, response.status_code, response.text)
            assert error_of(response)["code"] == -32602, (bad, response.text)
        # The real cursor still works after the refusals (the same page; cursors the gateway
        # mints are sealed afresh each time, so only the items are compared).
        again = raw.result("resources/list", {"cursor": cursor})
        assert again["resources"] == second["resources"]
    finally:
        raw.close()


def test_pagination_in_the_modern_era(stack):
    """Two paging catalog members, the SDK client in auto mode (2026-07-28, stateless)."""
    files = stack.catalog_server("files", page_size=2, extra_resources=5)
    web = stack.catalog_server("web", page_size=4, extra_resources=7)
    gateway = stack.gateway(
        {"files": {"servers": [files]}, "web": {"servers": [web]}},
        extra=vs_yaml([{"group": "files"}, {"group": "web"}], max_page_size=1024),
    )
    expected = sorted(
        [prefixed_uri(u, "files") for u in CATALOG_RESOURCES]
        + [f"file://files+/extra-{i}.txt" for i in range(5)]
        + [prefixed_uri(u, "web") for u in CATALOG_RESOURCES]
        + [f"file://web+/extra-{i}.txt" for i in range(7)]
    )

    async def body():
        async with client(gateway, "auto") as c:
            assert c.protocol_version == MODERN
            items, pages = await all_pages(c.list_resources, "resources")
            assert sorted(r.uri for r in items) == expected
            assert pages > 2, pages
            with pytest.raises(MCPError) as refused:
                await c.list_resources(cursor="bm90LWEtY3Vyc29y")
            assert refused.value.error.code == -32602, refused.value.error

    run(body)


# ---- server -> client requests and the GET stream (server-everything) ------------------


class ClientSide:
    """The client's answers to a member's requests, and what it was asked."""

    def __init__(self):
        self.sampling: list = []
        self.elicitation: list = []
        self.roots = 0
        self.logs: list = []

    async def sample(self, context, params):
        self.sampling.append(params)
        return CreateMessageResult(
            role="assistant",
            content=TextContent(text="sampled by the e2e client"),
            model="e2e-model",
            stop_reason="endTurn",
        )

    async def elicit(self, context, params):
        self.elicitation.append(params)
        if "answer" in params.requested_schema.get("properties", {}):  # the catalog peer's `ask`
            return ElicitResult(action="accept", content={"answer": "forty-two"})
        return ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async def list_roots(self, context):
        self.roots += 1
        return ListRootsResult(roots=[Root(uri="file:///tmp/e2e-root", name="e2e root")])

    async def log(self, params):
        self.logs.append(params)

    def callbacks(self) -> dict:
        return {
            "sampling_callback": self.sample,
            "elicitation_callback": self.elicit,
            "list_roots_callback": self.list_roots,
            "logging_callback": self.log,
        }


def everything_and_catalog(stack) -> str:
    everything = stack.everything_server()
    files = stack.catalog_server("files")
    return stack.gateway(
        {"ev": {"servers": [everything]}, "files": {"servers": [files]}},
        extra=vs_yaml([{"group": "ev"}, {"group": "files"}]),
    )


def test_sampling_through_the_virtual_server(stack):
    gateway = everything_and_catalog(stack)
    side = ClientSide()

    async def body():
        async with client(gateway, "legacy", **side.callbacks()) as c:
            await wait_for_tool(c, "ev__trigger-sampling-request")
            result = await c.call_tool("ev__trigger-sampling-request", {"prompt": "say hi", "maxTokens": 20})
            assert "sampled by the e2e client" in text_of(result), result
            [asked] = side.sampling
            assert "say hi" in asked.messages[0].content.text
            # The session goes on: another member, then the same one again.
            assert text_of(await c.call_tool("files__echo", {"text": "next"})) == "next"
            result = await c.call_tool("ev__trigger-sampling-request", {"prompt": "again", "maxTokens": 20})
            assert "sampled by the e2e client" in text_of(result)
            assert len(side.sampling) == 2

    run(body)


def test_elicitation_through_the_virtual_server(stack):
    gateway = everything_and_catalog(stack)
    side = ClientSide()

    async def body():
        async with client(gateway, "legacy", **side.callbacks()) as c:
            await wait_for_tool(c, "ev__trigger-elicitation-request")
            result = await c.call_tool("ev__trigger-elicitation-request", {})
            text = text_of(result)
            assert "Ada Lovelace" in text and "Agreed to terms: true" in text, text
            assert len(side.elicitation) == 1

    run(body)


def test_roots_through_the_virtual_server(stack):
    gateway = everything_and_catalog(stack)
    side = ClientSide()

    async def body():
        async with client(gateway, "legacy", **side.callbacks()) as c:
            await wait_for_tool(c, "ev__get-roots-list")
            with anyio.fail_after(30):
                result = await c.call_tool("ev__get-roots-list", {})
            text = text_of(result)
            assert "file:///tmp/e2e-root" in text, text
            assert side.roots >= 1

    run(body)


@pytest.mark.parametrize("mode", MODES)
def test_server_requests_from_two_python_members_at_once(stack, mode):
    """Elicitation, sampling and roots asked by two Python members during concurrent calls:
    mid-call requests on each call's stream (legacy; both members number their requests
    alike, so the gateway must tell them apart), or an InputRequiredResult and the client's
    retry, routed by its prefix (2026-07-28)."""
    files = stack.catalog_server("files")
    web = stack.catalog_server("web")
    gateway = stack.gateway(
        {"files": {"servers": [files]}, "web": {"servers": [web]}},
        extra=vs_yaml([{"group": "files"}, {"group": "web"}]),
    )
    side = ClientSide()

    async def body():
        async with client(gateway, mode, **side.callbacks()) as c:
            assert c.protocol_version == (MODERN if mode == "auto" else LEGACY)
            results = {}

            async def call(tool, arguments):
                results[tool] = text_of(await c.call_tool(tool, arguments))

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for prefix in ["files", "web"]:
                        tg.start_soon(call, f"{prefix}__ask", {"question": f"{prefix}?"})
                        tg.start_soon(call, f"{prefix}__think", {"question": f"think {prefix}"})
                        tg.start_soon(call, f"{prefix}__client_roots", {})
            assert results == {
                "files__ask": "files heard forty-two",
                "web__ask": "web heard forty-two",
                "files__think": "files sampled sampled by the e2e client",
                "web__think": "web sampled sampled by the e2e client",
                "files__client_roots": "file:///tmp/e2e-root",
                "web__client_roots": "file:///tmp/e2e-root",
            }, results
            assert sorted(e.message for e in side.elicitation) == ["files?", "web?"]
            assert sorted(m.messages[0].content.text for m in side.sampling) == ["think files", "think web"]
            assert side.roots == 2

    run(body)


def test_get_stream_merges_the_members_streams(stack):
    """server-everything's simulated logging sends `notifications/message` on its GET stream
    (no related request): it reaches the client through the virtual server's GET stream."""
    gateway = everything_and_catalog(stack)
    side = ClientSide()

    async def body():
        async with client(gateway, "legacy", **side.callbacks()) as c:
            result = await c.call_tool("ev__toggle-simulated-logging", {})
            assert "Started simulated" in text_of(result)
            with anyio.move_on_after(15):
                while not any("SessionId" in str(log.data) for log in side.logs):
                    await anyio.sleep(0.1)
            assert any("SessionId" in str(log.data) for log in side.logs), f"no simulated log message from the member's GET stream reached the client: {side.logs}"
            await c.call_tool("ev__toggle-simulated-logging", {})

    run(body)


# ---- the TypeScript SDK client ----------------------------------------------------------------


def test_typescript_sdk_client(stack):
    gateway, _, _ = two_catalogs(stack)
    script = E2E / "peers/ts_client.mjs"
    done = subprocess.run(
        ["node", script, f"{gateway}/mcp", "files__link", json.dumps({"path": "ts.txt"})],
        cwd=E2E,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["serverInfo"]["name"] == NAME, summary
    assert summary["sessionId"], summary
    assert set(summary["tools"]) == FILES_TOOLS | WEB_TOOLS, summary["tools"]
    call = summary["call"]
    assert call["isError"] is False and call["text"] == "see ts.txt", call
    [link] = [c for c in call["content"] if c["type"] == "resource_link"]
    assert link["uri"] == "file://files+/ts.txt", link
    assert summary["terminated"] is True, summary


# ---- two gateways, one session ----------------------------------------------------------------


def test_session_alternates_between_two_gateways(stack):
    """Two gateway processes with the same `sessions.keys` serve one virtual-server session,
    each request going to the other one: initialize on A, list on B, call on A, GET on B,
    DELETE on A."""
    files = stack.catalog_server("files")
    web = stack.catalog_server("web")
    groups = {"files": {"servers": [files]}, "web": {"servers": [web]}}
    extra = vs_yaml([{"group": "files"}, {"group": "web"}], extra=f'sessions:\n  keys: ["{session_key()}"]\n')
    a = f"{stack.gateway(groups, extra=extra)}/mcp"
    b = f"{stack.gateway(groups, extra=extra)}/mcp"

    raw = Legacy(a)
    try:
        result = raw.initialize(url=a)
        assert result["serverInfo"]["name"] == NAME
        assert raw.initialized(url=b).status_code == 202

        tools = {t["name"] for t in raw.result("tools/list", url=b)["tools"]}
        assert {"files__echo", "web__echo"} <= tools, tools
        called = raw.result("tools/call", {"name": "web__whoami", "arguments": {}}, url=a)
        assert called["content"][0]["text"] == "web", called
        called = raw.result("tools/call", {"name": "files__echo", "arguments": {"text": "on b"}}, url=b)
        assert called["content"][0]["text"] == "on b", called
        read = raw.result("resources/read", {"uri": "file://web+/readme.txt"}, url=a)
        assert read["contents"][0]["text"] == "readme of web", read

        # The GET stream on B: opens (200, an event stream) for the session A minted.
        headers = {**raw.headers(), "Accept": "text/event-stream"}
        with raw.http.stream("GET", b, headers=headers, timeout=httpx.Timeout(30, read=2)) as stream:
            assert stream.status_code == 200, stream.read()
            assert stream.headers["content-type"].startswith("text/event-stream"), stream.headers

        # Still one session on both.
        called = raw.result("tools/call", {"name": "files__whoami", "arguments": {}}, url=b)
        assert called["content"][0]["text"] == "files"

        deleted = raw.http.delete(a, headers=raw.headers())
        assert deleted.status_code in (200, 204), deleted.text
        # (What the id gets after the DELETE: test_deleted_session_is_not_served.)
    finally:
        raw.close()


# ---- a member goes away -----------------------------------------------------------------------


def restart(stack, url: str, name: str) -> str:
    """Start the catalog peer `name` again on the port of `url` (after stopping it)."""
    port = httpx.URL(url).port
    deadline = time.monotonic() + 10
    while True:
        try:
            return stack.catalog_server(name, port=port)
        except BaseException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("mode", MODES)
def test_fail_open_member_down_then_back(stack, mode):
    # The calls to the member while it is down open its circuit breaker: a short open_for
    # lets it be tried again within the test.
    gateway, files, web = two_catalogs(stack, on_member_failure="fail_open", web_yaml="circuit_breaker: {open_for: 1s}")

    async def body():
        async with client(gateway, mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == FILES_TOOLS | WEB_TOOLS
            assert text_of(await c.call_tool("w__echo", {"text": "up"})) == "up"

            stack.peer(web).stop()
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == FILES_TOOLS, f"with web down: {sorted(names)}"
            uris = {r.uri for r in (await c.list_resources()).resources}
            assert uris == {prefixed_uri(u, "files") for u in CATALOG_RESOURCES}, uris
            prompts = {p.name for p in (await c.list_prompts()).prompts}
            assert prompts == {f"files__{p}" for p in CATALOG_PROMPTS}, prompts
            assert text_of(await c.call_tool("files__echo", {"text": "still"})) == "still"
            # A call to the member that is down fails, one way or another.
            try:
                result = await c.call_tool("w__echo", {"text": "down"})
            except MCPError:
                pass
            else:
                assert result.is_error, result

            restart(stack, web, "web")
            with anyio.move_on_after(20):
                while True:
                    names = {t.name for t in (await c.list_tools()).tools}
                    if names == FILES_TOOLS | WEB_TOOLS:
                        break
                    await anyio.sleep(0.3)
            assert names == FILES_TOOLS | WEB_TOOLS, f"20 s after the restart, still missing {sorted(WEB_TOOLS - names)}"
            assert text_of(await c.call_tool("w__echo", {"text": "back"})) == "back"
            assert text_of(await c.call_tool("files__echo", {"text": "both"})) == "both"

    run(body)


def test_fail_open_raw_session_member_restarts(stack):
    """The same as above with a raw legacy session that takes a renewed `Mcp-Session-Id`
    from any answer: the restarted member is initialized again once, not per request."""
    gateway, files, web = two_catalogs(stack, on_member_failure="fail_open")
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        assert {t["name"] for t in raw.result("tools/list")["tools"]} == FILES_TOOLS | WEB_TOOLS
        stack.peer(web).stop()
        assert {t["name"] for t in raw.result("tools/list")["tools"]} == FILES_TOOLS
        restart(stack, web, "web")
        for i in range(3):
            assert {t["name"] for t in raw.result("tools/list")["tools"]} == FILES_TOOLS | WEB_TOOLS, i
            called = raw.result("tools/call", {"name": "w__echo", "arguments": {"text": f"back {i}"}})
            assert called["content"][0]["text"] == f"back {i}"
    finally:
        raw.close()
    assert member_initializations(web) == 1


def member_initializations(url: str) -> int:
    """How many sessions the catalog peer at `url` was asked to begin, not counting the one
    that asks."""

    async def body():
        async with Client(url, mode="legacy", read_timeout_seconds=30) as direct:
            return int(text_of(await direct.call_tool("initializations", {}))) - 1

    return anyio.run(body)


def test_member_restart_under_a_python_sdk_session(stack):
    """The Python SDK 2.x client takes `Mcp-Session-Id` from the `initialize` answer only
    (mcp/client/streamable_http.py), so it keeps sending the id it began with. After a
    member restarts, that session must still list the member's items and reach it, without
    beginning a new member session for every request."""
    gateway, files, web = two_catalogs(stack, on_member_failure="fail_open")

    async def body():
        async with client(gateway, "legacy") as c:
            assert {t.name for t in (await c.list_tools()).tools} == FILES_TOOLS | WEB_TOOLS
            stack.peer(web).stop()
            restart(stack, web, "web")
            for i in range(4):
                assert text_of(await c.call_tool("w__echo", {"text": f"call {i}"})) == f"call {i}"
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == FILES_TOOLS | WEB_TOOLS, f"after the restart: {sorted(names)}"

    run(body)
    started = member_initializations(web)
    assert started == 1, f"the restarted member was asked to begin {started} sessions for one client session"


def test_fail_closed_names_the_member(stack):
    gateway, files, web = two_catalogs(stack, web_prefix="remote", on_member_failure="fail_closed")
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        assert {t["name"] for t in raw.result("tools/list")["tools"]} == FILES_TOOLS | web_tools("remote")

        stack.peer(web).stop()
        response = raw.request("tools/list")
        assert response.status_code == 502, (response.status_code, response.text)
        error = error_of(response)
        assert "remote" in error["message"], error
        # A call that needs only the member that is up still works.
        called = raw.result("tools/call", {"name": "files__echo", "arguments": {"text": "ok"}})
        assert called["content"][0]["text"] == "ok"
        # A new session cannot start without every member.
        fresh = Legacy(f"{gateway}/mcp", raw.http)
        response = fresh.request("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}})
        assert response.status_code == 502, (response.status_code, response.text)
        assert "remote" in error_of(response)["message"]

        restart(stack, web, "web")
        deadline = time.monotonic() + 20
        while True:
            response = raw.request("tools/list")
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert response.status_code == 200, response.text
    finally:
        raw.close()

    # The modern era: the same refusal, statelessly.
    stack.peer(web).stop()
    response = modern_post(f"{gateway}/mcp", "tools/list")
    assert response.status_code == 502, (response.status_code, response.text)
    assert "remote" in error_of(response)["message"]


# ---- policies on prefixed names ---------------------------------------------------------------


POLICIES = """
security:
  policies:
    - {name: no-files-fetch, effect: deny, tools: ["files__fetch*"]}
    - {name: the-rest, effect: allow}
"""


def test_policy_denies_a_prefixed_tool_before_the_member(stack):
    gateway, _, _ = two_catalogs(stack, extra=POLICIES)
    raw = Legacy(f"{gateway}/mcp")
    try:
        raw.initialize()
        raw.initialized()
        names = {t["name"] for t in raw.result("tools/list")["tools"]}
        # Lists are filtered by the policies too.
        assert "files__fetch" not in names and "files__fetch_raw" not in names, names
        assert {"files__echo", "w__fetch"} <= names, names

        before = int(raw.result("tools/call", {"name": "files__calls", "arguments": {}})["content"][0]["text"])
        for denied in ["files__fetch", "files__fetch_raw"]:
            response = raw.request("tools/call", {"name": denied, "arguments": {"url": "x"}})
            assert response.status_code == 403, (denied, response.status_code, response.text)
            error = error_of(response)
            assert error["code"] == -32013 and "no-files-fetch" in error["message"], error
        # The other member's fetch is allowed.
        fetched = raw.result("tools/call", {"name": "w__fetch", "arguments": {"url": "x"}})
        assert fetched["content"][0]["text"] == "web fetched x"
        # The files member saw only the two calls() calls: the denied ones never arrived.
        after = int(raw.result("tools/call", {"name": "files__calls", "arguments": {}})["content"][0]["text"])
        assert after == before + 1, (before, after)
    finally:
        raw.close()

    async def modern():
        async with client(gateway, "auto") as c:
            assert c.protocol_version == MODERN
            with pytest.raises(MCPError) as refused:
                await c.call_tool("files__fetch", {"url": "x"})
            assert refused.value.error.code == -32013, refused.value.error
            assert text_of(await c.call_tool("w__fetch", {"url": "y"})) == "web fetched y"

    run(modern)


# ---- naming settings, several virtual servers on one gateway ---------------------------------


def test_prefix_mode_never_and_a_custom_separator(stack):
    """Two virtual servers and a plain route on one gateway: /a with `prefix_mode: never`
    (names as the members spell them; each member lists its tools), /b with separator ".",
    /plain a route straight to the `files` group."""
    files = stack.catalog_server("files")
    web = stack.catalog_server("web")
    never = {
        "path": "/a",
        "name": NAME,
        "prefix_mode": "never",
        "members": [
            {"group": "files", "tools": {"include": ["echo", "whoami"]}},
            {"group": "web", "tools": {"include": ["fetch"]}},
        ],
    }
    dotted = {"path": "/b", "name": NAME, "separator": ".", "members": [{"group": "files"}, {"group": "web"}]}
    extra = "virtual_servers:\n" + "".join(f"  - {json.dumps(vs)}\n" for vs in (never, dotted))
    gateway = stack.gateway(
        {"files": {"servers": [files]}, "web": {"servers": [web]}}, routes=[("/plain", "files")], extra=extra
    )

    async def body():
        async with client(gateway, "legacy", path="/a") as c:
            assert {t.name for t in (await c.list_tools()).tools} == {"echo", "whoami", "fetch"}
            assert text_of(await c.call_tool("whoami", {})) == "files"
            assert text_of(await c.call_tool("fetch", {"url": "u"})) == "web fetched u"
        async with client(gateway, "auto", path="/b") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"files.echo", "web.echo", "web.whoami"} <= names, names
            assert text_of(await c.call_tool("web.whoami", {})) == "web"
        async with client(gateway, "legacy", path="/plain") as c:
            # A plain route is untouched: the member's own names and serverInfo.
            assert c.server_info.name == "files"
            assert "echo" in {t.name for t in (await c.list_tools()).tools}

    run(body)


def test_listen_is_split_per_member_and_merged(stack):
    """`subscriptions/listen` (2026-07-28) through the virtual server: one acknowledgment
    with what the members honored (URIs in the catalog's spelling), then each member's
    changes on the client's stream, URIs prefixed."""
    gateway, files, web = two_catalogs(stack)
    readme = prefixed_uri("file:///readme.txt", "files")

    async def body():
        async with client(gateway, "auto") as c:
            assert c.protocol_version == MODERN
            async with c.listen(tools_list_changed=True, resource_subscriptions=[readme]) as sub:
                assert sub.honored.tools_list_changed is True, sub.honored
                assert list(sub.honored.resource_subscriptions or []) == [readme], sub.honored
                assert text_of(await c.call_tool("files__touch", {"uri": "file:///readme.txt"}))
                seen = set()
                with anyio.fail_after(15):
                    async for event in sub:
                        seen.add(type(event).__name__ + ":" + str(getattr(event, "uri", "")))
                        if {"ToolsListChanged:", f"ResourceUpdated:{readme}"} <= seen:
                            break
                # Calls go on while the stream is open.
                assert text_of(await c.call_tool("w__echo", {"text": "x"})) == "x"

    run(body)
