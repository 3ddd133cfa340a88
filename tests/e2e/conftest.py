"""Shared fixtures for the end-to-end tests: real peers, the real gateway binary.

Every process listens on a free loopback port, writes its output to a log file in the
test's temporary directory, and is killed at teardown. Peers: the Python SDK server
(peers/python_server.py) and its catalog variant (peers/catalog_server.py), a small OAuth
authorization server (peers/auth_server.py), the reference `server-everything`, the bundled
demo server, a Python SDK server on a Unix socket (peers/unix_server.py); stdio servers are
started by the gateway itself (test_stdio.py). When a test fails, the logs of the gateway
and of every peer it started are attached to the report.

Environment:
  MCP_GATEWAY_BIN      gateway binary (default: target/debug/mcp-gateway)
  MCP_DEMO_SERVER_BIN  demo server binary (default: target/debug/demo_server)
  MCP1_PYTHON          python of a virtualenv with the Python SDK 1.x, for its WebSocket
                       client (default: .venv-mcp1/bin/python; scripts/test makes it)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

E2E = Path(__file__).resolve().parent
REPO = E2E.parents[1]
GATEWAY_BIN = Path(os.environ.get("MCP_GATEWAY_BIN", REPO / "target/debug/mcp-gateway"))
DEMO_BIN = Path(os.environ.get("MCP_DEMO_SERVER_BIN", REPO / "target/debug/demo_server"))
MCP1_PYTHON = Path(os.environ.get("MCP1_PYTHON", REPO / ".venv-mcp1/bin/python"))
EVERYTHING_JS = E2E / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
PYTHON_PEER = E2E / "peers/python_server.py"
CATALOG_PEER = E2E / "peers/catalog_server.py"
AUTH_PEER = E2E / "peers/auth_server.py"
UNIX_PEER = E2E / "peers/unix_server.py"

START_TIMEOUT = 30.0
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A child process whose stdout and stderr go to `<dir>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None, cwd=None, stop_signal=signal.SIGTERM):
        self.name = name
        self.stop_signal = stop_signal
        self.argv = [str(a) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self.port: int | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def fail(self, why: str):
        pytest.fail(f"{self.name}: {why}\n--- {self.name} output ---\n{self.log()[-6000:]}", pytrace=False)

    def wait_listening_line(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for `listening on HOST:PORT` in the output; return the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTENING.search(self.log())
            if m:
                self.port = int(m.group(2))
                return self.port
            if not self.alive():
                self.fail(f"exited with {self.popen.returncode} before listening")
            time.sleep(0.05)
        self.fail("did not print its address in time")

    def wait_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail(f"exited with {self.popen.returncode} before accepting connections")
            if port_open(port):
                self.port = port
                return
            time.sleep(0.05)
        self.fail(f"port {port} did not accept connections in time")

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        self._log.close()


class Stack:
    """The processes of one test, and the factories that start them."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.procs: list[Proc] = []
        self._by_url: dict[str, Proc] = {}

    def _spawn(self, name: str, argv, env=None, cwd=None, **kw) -> Proc:
        names = {p.name for p in self.procs}
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name}-{n}", n + 1
        proc = Proc(unique, argv, self.dir, env=env, cwd=cwd, **kw)
        self.procs.append(proc)
        return proc

    # ---- peers ---------------------------------------------------------------------

    def _python_peer(self, name: str, script: Path, *args: str, port: int = 0) -> str:
        """Start a Python peer that prints `listening on HOST:PORT` (on `port`, 0: one the
        system picks); return `http://127.0.0.1:PORT`."""
        proc = self._spawn(name, [sys.executable, script, "--port", str(port), *args])
        port = proc.wait_listening_line()
        proc.wait_port(port)
        base = f"http://127.0.0.1:{port}"
        self._by_url[base] = proc
        return base

    def peer(self, url: str) -> Proc:
        """The process of the Python peer last started at `url` (its MCP URL or its base)."""
        u = httpx.URL(url)
        return self._by_url[f"{u.scheme}://{u.host}:{u.port}"]

    def python_server(self, name: str = "python-sdk") -> str:
        """The Python SDK 2.x `MCPServer` peer; returns its MCP URL."""
        return self._python_peer(name, PYTHON_PEER, "--name", name) + "/mcp"

    def catalog_server(self, name: str = "catalog", *, port: int = 0, page_size: int = 0, extra_resources: int = 0) -> str:
        """The catalog peer (peers/catalog_server.py: tools, prompts, resources, a template);
        returns its MCP URL. `port` restarts one where a stopped one listened; `page_size`
        pages its `resources/list`; `extra_resources` adds `file:///extra-<i>.txt` resources."""
        args = ["--name", name, "--page-size", str(page_size), "--extra-resources", str(extra_resources)]
        return self._python_peer(name, CATALOG_PEER, *args, port=port) + "/mcp"

    def auth_server(self, name: str = "auth-server", grantable: str | None = None) -> str:
        """The OAuth 2.1 authorization server peer (peers/auth_server.py); returns its issuer
        URL (`http://127.0.0.1:PORT`). `grantable` limits the scopes it grants."""
        args = ["--grantable", grantable] if grantable is not None else []
        return self._python_peer(name, AUTH_PEER, *args)

    def everything_server(self, name: str = "everything", env: dict[str, str] | None = None, mode: str = "streamableHttp") -> str:
        """`@modelcontextprotocol/server-everything` in streamableHttp mode (`mode="sse"`:
        the legacy HTTP+SSE transport); returns its MCP URL (`…/mcp`, or `…/sse`).

        It cannot report a port it picked itself (it logs `PORT` as given), so pick a free
        port and retry if another process took it in the meantime.
        """
        if not EVERYTHING_JS.exists():
            pytest.fail(f"{EVERYTHING_JS} is missing: run `npm ci` in tests/e2e (scripts/test does)")
        for _ in range(3):
            port = free_port()
            proc = self._spawn(name, ["node", EVERYTHING_JS, mode], env={"PORT": str(port), **(env or {})}, cwd=E2E)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.alive() and not port_open(port):
                time.sleep(0.05)
            if proc.alive() and port_open(port):
                proc.port = port
                return f"http://127.0.0.1:{port}/{'sse' if mode == 'sse' else 'mcp'}"
            if "EADDRINUSE" not in proc.log() and "already in use" not in proc.log():
                proc.fail("did not start")
            proc.stop()
        proc.fail("no free port after 3 attempts")

    def supergateway_ws(self, name: str = "supergateway") -> str:
        """npm `supergateway` serving `server-everything stdio` over WebSocket; returns its
        URL (`ws://127.0.0.1:PORT/message`)."""
        script = E2E / "node_modules/supergateway/dist/index.js"
        if not script.exists():
            pytest.fail(f"{script} is missing: run `npm ci` in tests/e2e (scripts/test does)")
        for _ in range(3):
            port = free_port()
            argv = ["node", script, "--stdio", f"node {EVERYTHING_JS} stdio", "--port", str(port), "--outputTransport", "ws"]
            proc = self._spawn(name, argv, cwd=E2E)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.alive() and not port_open(port):
                time.sleep(0.05)
            if proc.alive() and port_open(port):
                proc.port = port
                self._by_url[f"ws://127.0.0.1:{port}"] = proc
                return f"ws://127.0.0.1:{port}/message"
            if "EADDRINUSE" not in proc.log():
                proc.fail("did not start")
            proc.stop()
        proc.fail("no free port after 3 attempts")

    def unix_server(self, path: Path, name: str = "unix-peer") -> str:
        """peers/unix_server.py (Python SDK 2.x) served by `uvicorn --uds path`; returns the
        gateway's URL for it, `unix://PATH:/mcp`."""
        argv = [sys.executable, "-m", "uvicorn", "--uds", path, "--app-dir", UNIX_PEER.parent, "--log-level", "warning", f"{UNIX_PEER.stem}:app"]
        proc = self._spawn(name, argv)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.alive():
                proc.fail(f"exited with {proc.popen.returncode} before listening on {path}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                return f"unix://{path}:/mcp"
            except OSError:
                time.sleep(0.05)
        proc.fail(f"did not listen on {path} in time")

    def demo_server(self, name: str = "demo") -> str:
        """The bundled rmcp demo server (demo/src/main.rs); returns its MCP URL."""
        if not DEMO_BIN.exists():
            pytest.fail(f"{DEMO_BIN} is missing: run `cargo build -p mcp-demo-server`")
        proc = self._spawn(name, [DEMO_BIN, "--port", "0"])
        port = proc.wait_listening_line()
        proc.wait_port(port)
        return f"http://127.0.0.1:{port}/mcp"

    # ---- the gateway ---------------------------------------------------------------

    def gateway(
        self,
        groups: dict[str, dict],
        routes: list[tuple[str, str]] | None = None,
        extra: str = "",
        server: dict | None = None,
    ) -> str:
        """Start the gateway in front of `groups` and return its base URL (`http://127.0.0.1:PORT`);
        `stack.peer(base)` is its process.

        `groups` maps a group name to `{"strategy": ..., "servers": [server, ...], "yaml": "..."}`
        (`yaml`: more keys of the group). A server is a URL, or a dict of the server entry's
        keys (`{"command": [...], "process": "shared"}`); servers get ids `s1`, `s2`, ... in
        order unless the dict names one. `extra` is YAML appended at the top level of the
        config (e.g. a `sessions:` section); `{port}` in it stands for the gateway's port, for
        settings that name the gateway's own URL (an OAuth `resource`). `server` adds keys to
        the `server:` section (`{"grace_period": "1s"}`).
        """
        if not GATEWAY_BIN.exists():
            pytest.fail(f"{GATEWAY_BIN} is missing: run `cargo build --bin mcp-gateway` (or set MCP_GATEWAY_BIN)")
        for attempt in range(3):
            port = free_port()
            config = self.dir / f"gateway-{port}.yaml"
            config.write_text(gateway_yaml(port, self.dir, groups, routes, extra, server))
            # SIGINT: Pingora's fast shutdown (SIGTERM waits out server.grace_period).
            proc = self._spawn("gateway", [GATEWAY_BIN, "--config", config], stop_signal=signal.SIGINT)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            status = None
            while time.monotonic() < deadline and proc.alive():
                try:
                    status = httpx.get(f"{base}/readiness", timeout=2).status_code
                    if status == 200:
                        proc.port = port
                        self._by_url[base] = proc
                        return base
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            if proc.alive():
                proc.fail(f"GET /readiness did not answer 200 in time (last status: {status})")
            if "in use" not in proc.log().lower() or attempt == 2:
                proc.fail(f"exited with {proc.popen.returncode} before it was ready")
            proc.stop()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def server_entry(i: int, server: str | dict) -> str:
    """One entry of a group's `servers:` as a YAML flow mapping: a URL, or a dict of keys
    (values written as JSON, which YAML reads as is)."""
    if isinstance(server, str):
        return f'{{id: s{i}, url: "{server}"}}'
    keys = {"id": f"s{i}", **server}
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in keys.items()) + "}"


def gateway_yaml(port: int, run_dir: Path, groups: dict[str, dict], routes, extra: str = "", server: dict | None = None) -> str:
    lines = [
        "server:",
        "  host: 127.0.0.1",
        f"  port: {port}",
        "  threads: 2",
        f"  pid_file: {run_dir / f'gateway-{port}.pid'}",
        f"  upgrade_sock: {run_dir / f'gateway-{port}-upgrade.sock'}",
    ]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in (server or {}).items()]
    lines += ["upstream:", "  groups:"]
    for name, group in groups.items():
        lines += [f"    {name}:", f"      strategy: {group.get('strategy', 'round_robin')}", "      servers:"]
        for i, entry in enumerate(group["servers"], start=1):
            lines.append(f"        - {server_entry(i, entry)}")
        # More keys of the group, as YAML (e.g. "circuit_breaker: {open_for: 1s}").
        lines += [f"      {line}" for line in group.get("yaml", "").splitlines() if line.strip()]
    if routes:
        lines.append("routes:")
        lines += [f"  - {{path: {path}, group: {group}}}" for path, group in routes]
    lines += ["logging:", "  level: info", "  format: text"]
    if "admin:" not in (extra or ""):
        # The admin service on a free port of its own (its default, 9090, is shared).
        lines += ["admin:", f"  port: {free_port()}"]
    if extra.strip():
        lines += textwrap.dedent(extra).replace("{port}", str(port)).strip("\n").splitlines()
    lines.append("")
    return "\n".join(lines)


@pytest.fixture
def stack(tmp_path, request):
    s = Stack(tmp_path)
    request.node._e2e_stack = s
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "_e2e_stack", None)
    if report.failed and stack is not None:
        for proc in stack.procs:
            report.sections.append((f"{proc.name} output ({' '.join(proc.argv[:2])})", proc.log()[-20000:] or "(empty)"))
