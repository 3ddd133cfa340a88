"""The gateway's client-facing transports besides Streamable HTTP: WebSocket and the legacy
HTTP+SSE transport (2024-11-05), against real clients.

WebSocket: `GET <route>` with `Upgrade: websocket` on any route or virtual server path;
subprotocol `mcp` (echoed when offered), one JSON-RPC message per text frame, the
connection is the MCP session. Authentication, `Origin` and route policies are checked
before the `101`; after it, frames the gateway cannot take close the connection (binary:
1003, text that is not UTF-8: 1007, a message over `limits.max_websocket_message`: 1009),
text that is not JSON gets a `-32700` error frame, a denied call a `-32013` one, and a
graceful stop closes with 1001.

Legacy SSE: `GET <route>/sse` opens the stream, whose first event (`endpoint`) names
`<route>/message?sessionId=<hex>`; `POST`s there answer `202` and their replies travel on
the stream as `message` events. A session is its caller's (another API key gets `404`)
and ends with its stream.

Clients: the TypeScript SDK v1 (`WebSocketClientTransport`, `SSEClientTransport`;
peers/ts_ws_client.mjs, peers/ts_sse_client.mjs), the Python SDK 1.x `websocket_client`
(peers/py1_ws_client.py, run with MCP1_PYTHON: the 2.x SDK has none), the Python SDK 2.x
`sse_client` in process; raw `websockets` and httpx where the wire matters. Upstreams: the
Python SDK server (Streamable HTTP), the reference `server-everything` over stdio, a
virtual server of two catalog peers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from conftest import E2E, EVERYTHING_JS, MCP1_PYTHON
from helpers import ProgressLog, run, text_of
from mcp import Client
from mcp.client.sse import sse_client
from test_federation import FILES_TOOLS, NAME, WEB_TOOLS, two_catalogs
from test_stdio import jsonrpc_error, marker, node_js, stdio  # noqa: F401 (marker: a fixture)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TS_WS_CLIENT = E2E / "peers/ts_ws_client.mjs"
TS_SSE_CLIENT = E2E / "peers/ts_sse_client.mjs"
PY1_WS_CLIENT = E2E / "peers/py1_ws_client.py"
LEGACY = "2025-11-25"

UNAUTHORIZED = -32010
FOREIGN_ORIGIN = -32012
FORBIDDEN = -32013
PARSE_ERROR = -32700

HEX_SESSION = re.compile(r"[0-9a-f]+")


# ---- upstreams, gateways, clients ---------------------------------------------------------------


def ws_url(gateway: str, path: str) -> str:
    """The WebSocket URL of `path` on the gateway at `gateway` (`http://…`)."""
    assert gateway.startswith("http://"), gateway
    return "ws://" + gateway.removeprefix("http://") + path


UPSTREAMS = ["http", "stdio"]


def upstream(stack, kind: str, marker: str) -> tuple[dict, str, dict, str]:
    """A group of one upstream of `kind` and a call to make through it: (group, tool,
    arguments, the call's text). `http`: the Python SDK server over Streamable HTTP;
    `stdio`: `server-everything stdio`, one process per session."""
    if kind == "http":
        return {"servers": [stack.python_server()]}, "add", {"a": 20, "b": 22}, "42"
    server = stdio(["node", node_js(EVERYTHING_JS), "stdio", marker], marker)
    return {"servers": [server]}, "echo", {"message": "over a client socket"}, "Echo: over a client socket"


def run_client(argv: list, timeout: float = 90) -> dict:
    """Run a client script; return the JSON summary it printed (asserting it succeeded)."""
    done = subprocess.run([str(a) for a in argv], cwd=E2E, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    summary = json.loads(lines[-1])
    assert "error" not in summary, summary
    return summary


def mcp1_python() -> str:
    if not MCP1_PYTHON.exists():
        pytest.fail(f"{MCP1_PYTHON} is missing: scripts/test installs tests/e2e/requirements-mcp1.txt there (or set MCP1_PYTHON)")
    return str(MCP1_PYTHON)


def assert_called(summary: dict, tool: str, text: str) -> None:
    assert tool in summary["tools"], summary["tools"]
    call = summary["call"]
    assert call["tool"] == tool and call["isError"] is False and call["text"] == text, call


# An API-key route whose policies deny one tool to everyone and the route to one key.
KEYS = {"alice": "e2e-ws-key-alice-6b0f3c1e9a", "bob": "e2e-ws-key-bob-2d8e7f4a1c", "mallory": "e2e-ws-key-mallory-9c3b5e0d7f"}
SECURED = "/mcp/py"


def secured_yaml(limits: str = "") -> str:
    keys = "\n".join(f'          - {{id: {name}, sha256: "{hashlib.sha256(key.encode()).hexdigest()}"}}' for name, key in KEYS.items())
    return f"""
security:
  auth:
    - name: clients
      routes: [{SECURED}]
      api_keys:
        keys:
{keys}
  policies:
    - {{name: no-mallory, effect: deny, subjects: [mallory]}}
    - {{name: no-add, effect: deny, tools: [add]}}
    - {{name: the-rest, effect: allow}}
{limits}"""


def secured_gateway(stack, limits: str = "") -> str:
    """The Python SDK server behind SECURED (API keys KEYS, `add` denied, mallory refused)."""
    return stack.gateway({"py": {"servers": [stack.python_server()]}}, routes=[(SECURED, "py")], extra=secured_yaml(limits))


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


# ---- raw WebSocket ---------------------------------------------------------------------------


def raw_ws(url: str, *, headers: dict | None = None, **kw):
    """A `websockets` connection without compression (frames on the wire as sent), its
    own keepalive pings off (the gateway's are answered regardless)."""
    kw.setdefault("subprotocols", ["mcp"])
    return connect(url, additional_headers=headers, compression=None, ping_interval=None, open_timeout=30, **kw)


async def send(ws, message: dict) -> None:
    await ws.send(json.dumps(message))


async def answer(ws, id) -> dict:
    """The next frame that answers request `id` (notifications and other frames skipped)."""
    with anyio.fail_after(30):
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == id and ("result" in message or "error" in message):
                return message


async def request(ws, id: int, method: str, params: dict | None = None) -> dict:
    message = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    await send(ws, message)
    return await answer(ws, id)


async def initialized(ws) -> dict:
    """initialize and notifications/initialized; the initialize result."""
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw-ws-e2e", "version": "1.0"}}
    reply = await request(ws, 1, "initialize", params)
    assert "result" in reply, reply
    await send(ws, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return reply["result"]


async def close_code(ws) -> int:
    """The code of the close frame the gateway sends next (frames before it skipped)."""
    with anyio.fail_after(30):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, f"the connection ended without a close frame: {closed!r}"
            return closed.rcvd.code


async def refused(url: str, **kw) -> tuple[int, dict]:
    """An upgrade the gateway refuses: (HTTP status, the JSON-RPC error of its body)."""
    with pytest.raises(InvalidStatus) as refusal:
        async with raw_ws(url, **kw):
            pass
    response = refusal.value.response
    assert response.status_code != 101
    assert response.headers.get("content-type", "").startswith("application/json"), (response.status_code, response.headers, response.body)
    body = json.loads(response.body)
    assert body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), int) and body["error"].get("message"), body
    return response.status_code, body["error"]


# ---- legacy SSE, raw -------------------------------------------------------------------------


class SseStream:
    """A raw `GET <route>/sse` stream (httpx): its events, one at a time."""

    def __init__(self, url: str, headers: dict | None = None):
        self.http = httpx.Client(timeout=httpx.Timeout(30))
        self._cm = self.http.stream("GET", url, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()

    def event(self) -> tuple[str, str]:
        """The next event with data: (event type, data)."""
        kind, data = "message", []
        for line in self._lines:
            if line == "":
                if data:
                    return kind, "\n".join(data)
                kind = "message"
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        raise AssertionError("the stream ended")

    def message(self, id) -> dict:
        """The next `message` event answering request `id`."""
        while True:
            kind, data = self.event()
            if kind == "message":
                message = json.loads(data)
                if message.get("id") == id:
                    return message

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.http.close()


def open_session(gateway: str, route: str, headers: dict | None = None) -> tuple[SseStream, str]:
    """A legacy SSE stream on `route` and the URL of its endpoint (resolved)."""
    stream = SseStream(f"{gateway}{route}/sse", headers)
    assert stream.response.status_code == 200, (stream.response.status_code, stream.response.read())
    assert stream.response.headers["content-type"].startswith("text/event-stream"), stream.response.headers
    kind, endpoint = stream.event()
    assert kind == "endpoint", (kind, endpoint)
    # Relative, on the same route, with the session's id.
    assert endpoint.startswith(f"{route}/message?sessionId="), endpoint
    [session] = parse_qs(urlsplit(endpoint).query)["sessionId"]
    assert HEX_SESSION.fullmatch(session), endpoint
    return stream, f"{gateway}{endpoint}"


def initialize(id: int = 1) -> dict:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw-sse-e2e", "version": "1.0"}}
    return {"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params}


def post(url: str, message, headers: dict | None = None) -> httpx.Response:
    content = message if isinstance(message, (bytes, str)) else json.dumps(message)
    return httpx.post(url, content=content, headers={"Content-Type": "application/json", **(headers or {})}, timeout=30)


# ---- WebSocket clients through the gateway ---------------------------------------------------


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_typescript_websocket_client(stack, marker, kind):
    group, tool, arguments, text = upstream(stack, kind, marker)
    gateway = stack.gateway({"up": group}, routes=[("/mcp/up", "up")])
    summary = run_client(["node", TS_WS_CLIENT, ws_url(gateway, "/mcp/up"), tool, json.dumps(arguments)])
    assert summary["subprotocol"] == "mcp", summary
    assert summary["protocolVersion"] == LEGACY, summary
    assert_called(summary, tool, text)


def test_typescript_websocket_client_on_a_virtual_server(stack):
    gateway, _, _ = two_catalogs(stack)
    summary = run_client(["node", TS_WS_CLIENT, ws_url(gateway, "/mcp"), "files__echo", json.dumps({"text": "federated over ws"})])
    assert summary["serverInfo"]["name"] == NAME, summary
    assert set(summary["tools"]) == FILES_TOOLS | WEB_TOOLS, summary["tools"]
    assert_called(summary, "files__echo", "federated over ws")


def test_typescript_websocket_client_with_an_api_key(stack):
    gateway = secured_gateway(stack)
    url = ws_url(gateway, SECURED)
    summary = run_client(["node", TS_WS_CLIENT, "--header", f"X-API-Key: {KEYS['alice']}", url, "echo", json.dumps({"text": "keyed"})])
    assert_called(summary, "echo", "keyed")
    # Lists are filtered by the policies over WebSocket too.
    assert "add" not in summary["tools"], summary["tools"]
    # Without the key the upgrade is refused: the client fails to connect.
    done = subprocess.run(["node", TS_WS_CLIENT, url], cwd=E2E, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "401" in json.loads(done.stdout.strip().splitlines()[-1])["error"], done.stdout


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_python_sdk_1x_websocket_client(stack, marker, kind):
    group, tool, arguments, text = upstream(stack, kind, marker)
    gateway = stack.gateway({"up": group}, routes=[("/mcp/up", "up")])
    summary = run_client([mcp1_python(), PY1_WS_CLIENT, ws_url(gateway, "/mcp/up"), tool, json.dumps(arguments)])
    assert summary["sdk"].startswith("1."), summary
    assert summary["subprotocol"] == "mcp", summary
    assert summary["protocolVersion"] == LEGACY, summary
    assert_called(summary, tool, text)


# ---- legacy SSE clients through the gateway --------------------------------------------------


def test_python_sdk_sse_client(stack):
    gateway = stack.gateway({"py": {"servers": [stack.python_server()]}}, routes=[("/mcp/py", "py")])
    sessions: list[str] = []

    async def body():
        transport = sse_client(f"{gateway}/mcp/py/sse", on_session_created=sessions.append)
        async with Client(transport, mode="legacy", read_timeout_seconds=30) as c:
            assert c.server_info.name == "python-sdk"
            assert {"echo", "add", "slow"} <= {t.name for t in (await c.list_tools()).tools}
            assert text_of(await c.call_tool("echo", {"text": "over the gateway's sse"})) == "over the gateway's sse"
            # Progress notifications travel on the stream before the result.
            progress = ProgressLog()
            assert text_of(await c.call_tool("slow", {"steps": 3}, progress_callback=progress)) == "done"
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3], progress.events

    run(body)
    [session] = sessions
    assert HEX_SESSION.fullmatch(session), session


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_typescript_sse_client(stack, marker, kind):
    group, tool, arguments, text = upstream(stack, kind, marker)
    gateway = stack.gateway({"up": group}, routes=[("/mcp/up", "up")])
    summary = run_client(["node", TS_SSE_CLIENT, f"{gateway}/mcp/up/sse", tool, json.dumps(arguments)])
    endpoint = summary["endpoint"]
    assert endpoint.startswith(f"{gateway}/mcp/up/message?sessionId="), endpoint
    assert HEX_SESSION.fullmatch(parse_qs(urlsplit(endpoint).query)["sessionId"][0]), endpoint
    assert summary["protocolVersion"] == LEGACY, summary
    assert_called(summary, tool, text)


# ---- WebSocket: what the gateway refuses -----------------------------------------------------


def test_websocket_refusals_and_closes(stack):
    gateway = secured_gateway(stack, limits="limits:\n  max_websocket_message: 4KiB\n")
    url = ws_url(gateway, SECURED)

    async def body():
        # Before the 101: the gateway's usual JSON-RPC errors, as HTTP answers.
        status, error = await refused(url)
        assert (status, error["code"]) == (401, UNAUTHORIZED), error
        status, error = await refused(url, headers={"X-API-Key": KEYS["alice"] + "-wrong"})
        assert (status, error["code"]) == (401, UNAUTHORIZED), error
        status, error = await refused(url, headers=key("alice"), origin="http://evil.example")
        assert (status, error["code"]) == (403, FOREIGN_ORIGIN), error
        # A route policy refuses the upgrade itself.
        status, error = await refused(url, headers=key("mallory"))
        assert (status, error["code"]) == (403, FORBIDDEN), error
        assert "no-mallory" in error["message"], error
        # Subprotocols: `mcp` or none; only others is a 400.
        status, error = await refused(url, headers=key("alice"), subprotocols=["foo"])
        assert status == 400, error

        # The page's own origin is same-origin: accepted.
        async with raw_ws(url, headers=key("alice"), origin=gateway) as ws:
            assert ws.subprotocol == "mcp"
            assert ws.response.headers.get("Sec-WebSocket-Protocol") == "mcp"
            await initialized(ws)
        async with raw_ws(url, headers=key("alice"), subprotocols=["foo", "mcp"]) as ws:
            assert ws.subprotocol == "mcp"
        async with raw_ws(url, headers=key("alice"), subprotocols=None) as ws:
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response.headers, ws.response.headers
            await initialized(ws)
            assert (await request(ws, 2, "ping"))["result"] == {}

        # After the 101: text that is not JSON gets an error frame; the socket stays open.
        async with raw_ws(url, headers=key("alice")) as ws:
            init = await initialized(ws)
            assert init["serverInfo"]["name"] == "python-sdk", init
            await ws.send("this is not json {")
            error = await answer(ws, None)
            assert error["jsonrpc"] == "2.0" and "id" in error, error
            assert error["error"]["code"] == PARSE_ERROR, error
            assert (await request(ws, 2, "ping"))["result"] == {}
            # A denied call: an error frame with the request's id; nothing reaches the server.
            tools = {t["name"] for t in (await request(ws, 3, "tools/list"))["result"]["tools"]}
            assert "echo" in tools and "add" not in tools, tools
            denied = await request(ws, 4, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
            assert denied["error"]["code"] == FORBIDDEN, denied
            assert "no-add" in denied["error"]["message"], denied
            echoed = await request(ws, 5, "tools/call", {"name": "echo", "arguments": {"text": "still open"}})
            assert echoed["result"]["content"][0]["text"] == "still open", echoed
            # A message under the cap goes through.
            text = "x" * 3000
            echoed = await request(ws, 6, "tools/call", {"name": "echo", "arguments": {"text": text}})
            assert echoed["result"]["content"][0]["text"] == text

        # Frames the gateway cannot take close the connection.
        ping = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"})
        async with raw_ws(url, headers=key("alice")) as ws:
            await initialized(ws)
            await ws.send(ping.encode())  # binary
            assert await close_code(ws) == 1003
        async with raw_ws(url, headers=key("alice")) as ws:
            await initialized(ws)
            await ws.send(b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "x": "\xff\xfe"}', text=True)  # not UTF-8
            assert await close_code(ws) == 1007
        async with raw_ws(url, headers=key("alice")) as ws:
            await initialized(ws)
            big = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "y" * 8192}}}
            await send(ws, big)
            assert await close_code(ws) == 1009

    run(body)


# ---- legacy SSE: what the gateway refuses ----------------------------------------------------


def test_legacy_sse_sessions(stack):
    gateway = secured_gateway(stack, limits="limits:\n  max_request_body: 64KiB\n")
    route = SECURED

    # The wire: the endpoint event, 202 for the POST, the answer on the stream.
    stream, endpoint = open_session(gateway, route, key("alice"))
    try:
        accepted = post(endpoint, initialize(1), key("alice"))
        assert accepted.status_code == 202, (accepted.status_code, accepted.text)
        reply = stream.message(1)
        assert reply["result"]["serverInfo"]["name"] == "python-sdk", reply
        assert post(endpoint, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key("alice")).status_code == 202
        assert post(endpoint, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, key("alice")).status_code == 202
        assert stream.message(2)["result"] == {}

        # Another API key does not get into alice's session; no key at all is a 401.
        other = post(endpoint, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, key("bob"))
        assert other.status_code == 404, (other.status_code, other.text)
        jsonrpc_error(other)
        anonymous = post(endpoint, {"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert anonymous.status_code == 401, (anonymous.status_code, anonymous.text)
        assert jsonrpc_error(anonymous)["code"] == UNAUTHORIZED

        # A body over limits.max_request_body.
        big = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "z" * 100_000}}}
        too_big = post(endpoint, big, key("alice"))
        assert too_big.status_code == 413, (too_big.status_code, too_big.text)
        jsonrpc_error(too_big)

        # A denied call is answered on the stream, like any other answer: a -32013 error
        # with the request's id, and the session lives on.
        denied = post(endpoint, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}, key("alice"))
        assert denied.status_code == 202, (denied.status_code, denied.text)
        error = stream.message(5)["error"]
        assert error["code"] == FORBIDDEN, error
        assert post(endpoint, {"jsonrpc": "2.0", "id": 6, "method": "ping"}, key("alice")).status_code == 202
        assert stream.message(6)["result"] == {}
    finally:
        stream.close()

    # A session id the gateway never handed out.
    unknown = endpoint.split("sessionId=")[0] + "sessionId=" + "0123456789abcdef" * 2
    missing = post(unknown, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, key("alice"))
    assert missing.status_code == 404, (missing.status_code, missing.text)
    jsonrpc_error(missing)

    # The stream closed by its client ends the session: its POSTs get 404 once the
    # gateway has noticed (a few seconds at most).
    deadline = time.monotonic() + 30
    while (late := post(endpoint, {"jsonrpc": "2.0", "id": 8, "method": "ping"}, key("alice"))).status_code != 404:
        assert late.status_code == 202, (late.status_code, late.text)
        assert time.monotonic() < deadline, "the session outlived its stream"
        time.sleep(0.2)
    jsonrpc_error(late)


# ---- shutdown --------------------------------------------------------------------------------


def test_websocket_gets_1001_on_graceful_stop(stack):
    gateway = stack.gateway(
        {"py": {"servers": [stack.python_server()]}},
        routes=[("/mcp/py", "py")],
        server={"drain_delay": "200ms", "grace_period": "5s"},
    )
    gw = stack.peer(gateway)

    async def body():
        async with raw_ws(ws_url(gateway, "/mcp/py")) as ws:
            await initialized(ws)
            assert (await request(ws, 2, "ping"))["result"] == {}
            os.kill(gw.popen.pid, signal.SIGTERM)
            assert await close_code(ws) == 1001

    run(body)
    try:
        code = gw.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        gw.fail("did not exit within 60 s of SIGTERM")
    assert code == 0, f"exit status {code}"
