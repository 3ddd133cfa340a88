"""stdio servers (`command:` instead of `url:`): the gateway runs the program and presents it
to clients as Streamable HTTP, one process per session (`process: per_session`) or a pool
it initializes itself (`process: shared`).

Servers: the reference `server-everything`, `server-filesystem` and `server-memory`
(TypeScript SDK), `mcp-server-time` (PyPI), peers/crashy_stdio.py (Python SDK 2.x, a tool
that kills its own process), and programs that exit at once. Clients: the Python SDK
`Client` (legacy era: sessions), raw httpx where the HTTP status matters.

Every stdio server here gets a marker (in its environment, and in its command line where
the program ignores extra arguments), so its processes can be found in /proc: the no-child-
left-behind test looks for them, and the teardown kills any that outlived the gateway.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import E2E, EVERYTHING_JS, free_port
from helpers import JSON_HEADERS, ProgressLog, run, text_of, wait_for_tool
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageResult, ListRootsResult, Root, TextContent

FILESYSTEM_JS = E2E / "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
MEMORY_JS = E2E / "node_modules/@modelcontextprotocol/server-memory/dist/index.js"
CRASHY = E2E / "peers/crashy_stdio.py"
LEGACY = "2025-11-25"
MARKER_ENV = "MCP_E2E_STDIO_MARKER"
# What a stdio server inherits from the gateway (docs: nothing else).
INHERITED = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}


# ---- processes, metrics, raw requests ---------------------------------------------------


def proc_info(pid: int) -> dict | None:
    """ppid, state, start time, command line and environment of a process (None: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return {
        "pid": pid,
        "state": fields[0],
        "ppid": int(fields[1]),
        "start": int(fields[19]),
        "argv": [a.decode(errors="replace") for a in cmdline.split(b"\0") if a],
        "environ": environ,
    }


def all_procs() -> list[dict]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := proc_info(int(name))) is not None:
            out.append(info)
    return out


def marked(marker: str) -> list[dict]:
    """Processes whose command line or environment carries `marker`."""
    m = marker.encode()
    return [p for p in all_procs() if m in p["environ"] or any(marker in a for a in p["argv"])]


def children_of(pid: int) -> list[dict]:
    return [p for p in all_procs() if p["ppid"] == pid]


@pytest.fixture
def marker(stack):
    """A marker for this test's stdio servers. At teardown the stack stops first (the
    gateway with SIGINT); a server process still alive a few seconds later is killed."""
    value = f"e2e-stdio-{uuid.uuid4().hex}"
    yield value
    stack.stop()
    deadline = time.monotonic() + 10
    while marked(value) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in marked(value):
        try:
            os.kill(p["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def stdio(command: list, marker: str, *, env: dict | None = None, **keys) -> dict:
    """A `command:` server entry, its environment carrying the test's marker."""
    return {"command": [str(a) for a in command], "env": {MARKER_ENV: marker, **(env or {})}, **keys}


def start(stack, groups: dict, routes: list[tuple[str, str]], server: dict | None = None) -> tuple[str, int]:
    """The gateway with an admin port of the test's choosing: (base URL, admin port)."""
    admin = free_port()
    gateway = stack.gateway(groups, routes=routes, extra=f"admin:\n  port: {admin}\n", server=server)
    return gateway, admin


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(admin: int, name: str, **labels) -> float | None:
    """The sum of the samples of `name` whose labels include `labels` (None: no sample)."""
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    total, found = 0.0, False
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    return total if found else None


def wait_metric(admin: int, name: str, want, timeout: float = 30, **labels) -> float | None:
    """Poll `name` until `want(value)` holds (or `timeout` passes); return the last value."""
    deadline = time.monotonic() + timeout
    value = metric(admin, name, **labels)
    while not want(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric(admin, name, **labels)
    return value


def initialize_message(id: int = 1) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "stdio-e2e", "version": "1.0"}},
    }


def post(url: str, message: dict, session: str | None = None) -> httpx.Response:
    headers = dict(JSON_HEADERS)
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = LEGACY
    return httpx.post(url, json=message, headers=headers, timeout=30)


def jsonrpc_error(response: httpx.Response) -> dict:
    """The JSON-RPC error object of a JSON answer (asserting it is one)."""
    ctype = response.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"{response.status_code} {ctype!r}: {response.text[:2000]}"
    body = response.json()
    assert body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), int) and body["error"].get("message"), body
    return body["error"]


def client(url: str, **kw) -> Client:
    return Client(url, mode="legacy", read_timeout_seconds=60, **kw)


class ClientSide:
    """The client's answers to a server's requests, and what it was asked."""

    def __init__(self, roots: list[Root] | None = None):
        self.sampling: list = []
        self.roots_asked = 0
        self.roots = roots if roots is not None else [Root(uri="file:///tmp/stdio-e2e-root", name="e2e root")]

    async def sample(self, context, params):
        self.sampling.append(params)
        return CreateMessageResult(
            role="assistant",
            content=TextContent(text="sampled by the e2e client"),
            model="e2e-model",
            stop_reason="endTurn",
        )

    async def list_roots(self, context):
        self.roots_asked += 1
        return ListRootsResult(roots=self.roots)

    def callbacks(self) -> dict:
        return {"sampling_callback": self.sample, "list_roots_callback": self.list_roots}


def leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions of a (nested) exception group."""
    out = []
    for e in group.exceptions:
        out += leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


def node_js(script: Path) -> Path:
    if not script.exists():
        pytest.fail(f"{script} is missing: run `npm ci` in tests/e2e (scripts/test does)")
    return script


# ---- reference servers, one process per session ---------------------------------------


def test_everything_per_session(stack, marker):
    everything = stdio(["node", node_js(EVERYTHING_JS), "stdio", marker], marker, env={"E2E_GIVEN": "yes"})
    gateway, admin = start(stack, {"ev": {"servers": [everything]}}, [("/mcp/ev", "ev")])
    side = ClientSide()

    async def body():
        async with client(f"{gateway}/mcp/ev", **side.callbacks()) as c:
            assert c.server_info is not None and "everything" in c.server_info.name, c.server_info
            names = await wait_for_tool(c, "trigger-sampling-request")
            assert {"echo", "trigger-long-running-operation", "get-roots-list", "get-env"} <= names, sorted(names)
            assert metric(admin, "mcp_gateway_stdio_processes", group="ev", server="s1") == 1

            assert text_of(await c.call_tool("echo", {"message": "over stdio"})) == "Echo: over stdio"

            # The environment: the minimal inherited set plus the entry's `env`, nothing else
            # (the gateway's own environment has PYTEST_CURRENT_TEST, for one).
            env = json.loads(text_of(await c.call_tool("get-env", {})))
            assert env.get("E2E_GIVEN") == "yes" and env.get(MARKER_ENV) == marker, env
            assert "PYTEST_CURRENT_TEST" in os.environ
            assert set(env) <= INHERITED | {"E2E_GIVEN", MARKER_ENV}, sorted(set(env) - INHERITED)

            # Progress is streamed: the first step (2 s in) reaches the client while the
            # operation (12 s) still runs.
            progress = ProgressLog()
            first = anyio.Event()
            done: dict = {}

            async def on_progress(p, total, message):
                await progress(p, total, message)
                first.set()

            async def long_call():
                done["result"] = await c.call_tool(
                    "trigger-long-running-operation", {"duration": 12, "steps": 6}, progress_callback=on_progress
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                with anyio.fail_after(9):
                    await first.wait()
                assert "result" not in done, "the result came before the first progress notification"
            assert "completed" in text_of(done["result"]).lower(), done["result"]
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3, 4, 5, 6], progress.events
            assert all(total == 6 for _, _, total, _ in progress.events), progress.events

            # Sampling: the server's request reaches the client's callback mid-call.
            result = await c.call_tool("trigger-sampling-request", {"prompt": "say hi over stdio", "maxTokens": 20})
            assert "sampled by the e2e client" in text_of(result), result
            [asked] = side.sampling
            assert "say hi over stdio" in asked.messages[0].content.text, asked

            # Roots: the server asked for the client's roots and lists them.
            with anyio.fail_after(30):
                text = text_of(await c.call_tool("get-roots-list", {}))
            assert "file:///tmp/stdio-e2e-root" in text, text
            assert side.roots_asked >= 1

            assert text_of(await c.call_tool("echo", {"message": "still here"})) == "Echo: still here"

    run(body)
    # The session's DELETE ended its process.
    assert wait_metric(admin, "mcp_gateway_stdio_processes", lambda v: v == 0, group="ev", server="s1") == 0
    assert metric(admin, "mcp_gateway_stdio_exits_total", group="ev", server="s1", how="stopped") == 1
    assert not marked(marker)


def test_filesystem_takes_the_clients_roots(stack, marker, tmp_path):
    """server-filesystem asks the client for its roots (`roots/list`, after `initialized`) and
    replaces the directories of its command line with them."""
    given = tmp_path / "given"
    root = tmp_path / "client-root"
    given.mkdir()
    root.mkdir()
    (root / "from-the-client.txt").write_text("a file under the client's root\n")
    (given / "from-the-command-line.txt").write_text("not under the client's root\n")
    fs = stdio(["node", node_js(FILESYSTEM_JS), given, marker], marker)
    gateway, _ = start(stack, {"files": {"servers": [fs]}}, [("/mcp/files", "files")])
    side = ClientSide(roots=[Root(uri=root.as_uri(), name="client root")])

    async def body():
        async with client(f"{gateway}/mcp/files", **side.callbacks()) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"list_allowed_directories", "list_directory", "read_text_file"} <= names, sorted(names)
            # The roots request and its answer travel while the client goes on: wait for the
            # server's allowed directories to become the client's root.
            text = ""
            with anyio.move_on_after(30):
                while str(root) not in text:
                    text = text_of(await c.call_tool("list_allowed_directories", {}))
                    if str(root) not in text:
                        await anyio.sleep(0.2)
            assert side.roots_asked >= 1, "the client was never asked for its roots"
            assert text.splitlines() == ["Allowed directories:", str(root)], text

            listing = text_of(await c.call_tool("list_directory", {"path": str(root)}))
            assert "from-the-client.txt" in listing, listing
            content = text_of(await c.call_tool("read_text_file", {"path": str(root / "from-the-client.txt")}))
            assert content.strip() == "a file under the client's root", content
            # The command line's directory is no longer allowed.
            outside = await c.call_tool("list_directory", {"path": str(given)})
            assert outside.is_error, outside

    run(body)


def test_memory_is_stateful_within_a_session(stack, marker, tmp_path):
    memory = stdio(["node", node_js(MEMORY_JS), marker], marker, env={"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")})
    gateway, _ = start(stack, {"memory": {"servers": [memory]}}, [("/mcp/memory", "memory")])
    entities = [
        {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]},
        {"name": "Engine", "entityType": "machine", "observations": ["analytical"]},
    ]

    async def body():
        async with client(f"{gateway}/mcp/memory") as c:
            assert {"create_entities", "read_graph"} <= {t.name for t in (await c.list_tools()).tools}
            created = await c.call_tool("create_entities", {"entities": entities})
            assert not created.is_error, created
            await c.call_tool("create_relations", {"relations": [{"from": "Ada", "to": "Engine", "relationType": "programmed"}]})
            graph = json.loads(text_of(await c.call_tool("read_graph", {})))
            got = {e["name"]: (e["entityType"], e["observations"]) for e in graph["entities"]}
            assert got == {e["name"]: (e["entityType"], e["observations"]) for e in entities}, graph
            assert [(r["from"], r["to"], r["relationType"]) for r in graph["relations"]] == [("Ada", "Engine", "programmed")], graph

    run(body)


def test_time_server_from_pypi(stack, marker):
    time_server = stdio([sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"], marker)
    gateway, _ = start(stack, {"time": {"servers": [time_server]}}, [("/mcp/time", "time")])

    async def body():
        async with client(f"{gateway}/mcp/time") as c:
            assert c.server_info is not None and c.server_info.name == "mcp-time", c.server_info
            assert "get_current_time" in {t.name for t in (await c.list_tools()).tools}
            now = json.loads(text_of(await c.call_tool("get_current_time", {"timezone": "UTC"})))
            assert now["timezone"] == "UTC", now
            assert now["datetime"].endswith("+00:00"), now
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", now["datetime"]), now

    run(body)


# ---- a shared pool ------------------------------------------------------------------


def test_shared_pool_of_two(stack, marker):
    pool = stdio([sys.executable, CRASHY, "--name", "pooled", marker], marker, process="shared", instances=2)
    gateway, admin = start(stack, {"pool": {"servers": [pool]}}, [("/mcp/pool", "pool")])
    gw = stack.peer(gateway)
    # The gateway starts and initializes the pool itself, before any client.
    assert wait_metric(admin, "mcp_gateway_stdio_processes", lambda v: v == 2, group="pool", server="s1") == 2
    children = {p["pid"] for p in children_of(gw.popen.pid) if marker.encode() in p["environ"]}
    assert len(children) == 2, children_of(gw.popen.pid)

    async def body():
        async with client(f"{gateway}/mcp/pool") as a, client(f"{gateway}/mcp/pool") as b:
            for c in (a, b):
                assert c.server_info is not None and c.server_info.name == "pooled", c.server_info
            assert text_of(await a.call_tool("echo", {"text": "from a"})) == "from a"
            assert text_of(await b.call_tool("echo", {"text": "from b"})) == "from b"
            # Both sessions at once.
            results = {}

            async def call(name, c, text):
                results[name] = text_of(await c.call_tool("echo", {"text": text}))

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(call, f"a{i}", a, f"a{i}")
                    tg.start_soon(call, f"b{i}", b, f"b{i}")
            assert results == {k: k for k in results} and len(results) == 8, results
            # Requests are spread over the two processes (round robin over every request
            # of the pool, the SDK's own tools/list and the health checks included: a
            # ping now and then shifts which process the next call gets). The metric
            # counts started processes; one may still be initializing (a slow Python
            # start), and until it is ready every request goes to the other: keep asking
            # until both have answered, within a bound that is not a timing claim.
            pids = set()
            deadline = time.monotonic() + 60
            i = 0
            while pids != children and time.monotonic() < deadline:
                c = (a, b)[i % 2]
                pids.add(int(text_of(await c.call_tool("pid", {}))))
                if i % 2:
                    await c.send_ping()
                if len(pids) < 2 and i >= 8:
                    await anyio.sleep(0.1)
                i += 1
            assert pids == children, (pids, children)

    run(body)
    # Sessions come and go; the pool stays.
    assert metric(admin, "mcp_gateway_stdio_processes", group="pool", server="s1") == 2
    assert {p["pid"] for p in children_of(gw.popen.pid) if marker.encode() in p["environ"]} == children


# ---- failures ---------------------------------------------------------------------


def test_server_that_exits_on_start(stack, marker):
    broken = stdio([sys.executable, "-c", "import sys; sys.exit(3)", marker], marker)
    fine = stdio([sys.executable, CRASHY, "--name", "fine", marker], marker)
    gateway, admin = start(
        stack,
        {"broken": {"servers": [broken]}, "fine": {"servers": [fine]}},
        [("/mcp/broken", "broken"), ("/mcp/fine", "fine")],
    )
    gw = stack.peer(gateway)
    answers = []
    deadline = time.monotonic() + 60
    while (metric(admin, "mcp_gateway_stdio_exits_total", group="broken", server="s1", how="exited") or 0) < 3:
        assert time.monotonic() < deadline, f"exits_total never reached 3; answers: {[(r.status_code, r.text) for r in answers]}"
        response = post(f"{gateway}/mcp/broken", initialize_message())
        answers.append(response)
        assert 500 <= response.status_code < 600, f"{response.status_code}: {response.text[:2000]}"
        jsonrpc_error(response)
        time.sleep(0.2)
    assert gw.alive()
    assert metric(admin, "mcp_gateway_stdio_processes", group="broken", server="s1") == 0

    # The SDK client's initialize gets a JSON-RPC error, not a hang.
    refused: list[MCPError] = []

    async def broken_client():
        with anyio.fail_after(30):
            try:
                async with client(f"{gateway}/mcp/broken"):
                    pass
            except* MCPError as errors:
                refused.extend(leaves(errors))

    run(broken_client)
    assert [e.error.code for e in refused] == [-32603], refused

    async def body():
        async with client(f"{gateway}/mcp/fine") as c:
            assert text_of(await c.call_tool("echo", {"text": "unaffected"})) == "unaffected"

    run(body)
    assert gw.alive()
    # A failed initialize opens no session.
    announced = [(r.status_code, r.headers["mcp-session-id"], r.text) for r in answers if "mcp-session-id" in r.headers]
    assert not announced, f"failed initializes that still announced a session: {announced}"


def test_server_that_crashes_mid_call(stack, marker):
    crashy = stdio([sys.executable, CRASHY, marker], marker)
    gateway, admin = start(stack, {"crashy": {"servers": [crashy]}}, [("/mcp/crashy", "crashy")])

    async def body():
        async with client(f"{gateway}/mcp/crashy") as c:
            first = int(text_of(await c.call_tool("pid", {})))
            assert proc_info(first) is not None
            # An error at once: well within the client's 60 s read timeout.
            with anyio.fail_after(20):
                with pytest.raises(MCPError) as crashed:
                    await c.call_tool("crash", {})
            assert crashed.value.error.code == -32603, crashed.value.error
            assert "exited" in crashed.value.error.message, crashed.value.error
            # The session's process is gone: the session with it.
            with anyio.fail_after(20):
                with pytest.raises(MCPError):
                    await c.call_tool("echo", {"text": "after the crash"})

        # One session's crash does not hold others back: a new session starts at once.
        async with client(f"{gateway}/mcp/crashy") as c:
            assert text_of(await c.call_tool("echo", {"text": "a new session"})) == "a new session"
            second = int(text_of(await c.call_tool("pid", {})))
            assert second != first

    run(body)
    assert metric(admin, "mcp_gateway_stdio_exits_total", group="crashy", server="s1", how="exited") == 1


def test_max_processes_per_session(stack, marker):
    capped = stdio([sys.executable, CRASHY, "--name", "capped", marker], marker, max_processes=1)
    gateway, admin = start(stack, {"capped": {"servers": [capped]}}, [("/mcp/capped", "capped")])
    url = f"{gateway}/mcp/capped"

    async def body():
        async with client(url) as c:
            assert text_of(await c.call_tool("echo", {"text": "the one session"})) == "the one session"
            # A second session at the cap: 503 with a JSON-RPC error, no new process.
            refused = await anyio.to_thread.run_sync(post, url, initialize_message())
            assert refused.status_code == 503, f"{refused.status_code}: {refused.text[:2000]}"
            error = jsonrpc_error(refused)
            assert "max_processes" in error["message"], error
            assert metric(admin, "mcp_gateway_stdio_processes", group="capped", server="s1") == 1
            assert len(marked(marker)) == 1, marked(marker)
            # The first session is unharmed.
            assert text_of(await c.call_tool("echo", {"text": "still mine"})) == "still mine"
        # Leaving the client sent DELETE: its process ends (the stop sequence runs on its own).

    run(body)
    assert wait_metric(admin, "mcp_gateway_stdio_processes", lambda v: v == 0, group="capped", server="s1") == 0

    async def again():
        async with client(url) as c:
            assert text_of(await c.call_tool("echo", {"text": "the next session"})) == "the next session"

    run(again)


# ---- shutdown ---------------------------------------------------------------------


def test_sigterm_leaves_no_child_behind(stack, marker):
    """A graceful stop (SIGTERM) stops every stdio process before the gateway exits: a
    per-session one whose session is still open, a shared pool, and a stubborn one that
    ignores both the closed stdin and SIGTERM (only the stop sequence's SIGKILL ends it)."""
    everything = stdio(["node", node_js(EVERYTHING_JS), "stdio", marker], marker)
    stubborn = stdio([sys.executable, CRASHY, "--name", "stubborn", "--stubborn", marker], marker)
    pool = stdio([sys.executable, CRASHY, "--name", "pooled", marker], marker, process="shared", instances=2)
    gateway, admin = start(
        stack,
        {"ev": {"servers": [everything]}, "stubborn": {"servers": [stubborn]}, "pool": {"servers": [pool]}},
        [("/mcp/ev", "ev"), ("/mcp/stubborn", "stubborn"), ("/mcp/pool", "pool")],
        # Short, so the test is quick; shorter than the stop sequence (2 s + 2 s), too.
        server={"drain_delay": "200ms", "grace_period": "2s", "graceful_shutdown_timeout": "2s"},
    )
    gw = stack.peer(gateway)

    # Per-session processes, their sessions left open (no DELETE).
    for path, name, arguments, answer in [
        ("/mcp/ev", "echo", {"message": "hi"}, "Echo: hi"),
        ("/mcp/stubborn", "echo", {"text": "stubborn hi"}, "stubborn hi"),
    ]:
        opened = post(f"{gateway}{path}", initialize_message())
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        assert post(f"{gateway}{path}", {"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status_code == 202
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        echoed = post(f"{gateway}{path}", call, session)
        assert echoed.status_code == 200 and answer in echoed.text, echoed.text

    # The pool answers once the gateway has initialized its processes: until then (a
    # moment after start) an initialize may be refused with 503.
    deadline = time.monotonic() + 90
    while (ready := post(f"{gateway}/mcp/pool", initialize_message())).status_code != 200:
        assert ready.status_code == 503 and time.monotonic() < deadline, f"{ready.status_code}: {ready.text[:2000]}"
        jsonrpc_error(ready)
        time.sleep(0.2)

    async def body():
        async with client(f"{gateway}/mcp/pool") as c:
            assert text_of(await c.call_tool("echo", {"text": "pooled"})) == "pooled"

    run(body)
    assert wait_metric(admin, "mcp_gateway_stdio_processes", lambda v: v == 4) == 4

    children = [p for p in children_of(gw.popen.pid) if marker.encode() in p["environ"]]
    assert len(children) == 4, children_of(gw.popen.pid)
    assert {p["pid"] for p in marked(marker)} == {p["pid"] for p in children}
    assert all(any(marker in a for a in p["argv"]) for p in children), [p["argv"] for p in children]

    os.kill(gw.popen.pid, signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = gw.popen.wait(timeout=60)
        took = time.monotonic() - sent
    except Exception:
        gw.fail("did not exit within 60 s of SIGTERM")

    def left(p: dict) -> str | None:
        now = proc_info(p["pid"])
        if now is None or now["start"] != p["start"]:
            return None
        return f"pid {p['pid']} ({' '.join(now['argv'])}) state {now['state']} ppid {now['ppid']}"

    remaining = [why for p in children if (why := left(p))]
    assert not remaining, f"still there after the gateway exited ({took:.1f} s after SIGTERM): {remaining}"
    assert not marked(marker), marked(marker)
    assert code == 0, f"exit status {code}"
