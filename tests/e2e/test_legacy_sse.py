"""Legacy HTTP+SSE servers (2024-11-05) behind the gateway (`url: sse+http://…/sse`),
driven by a Streamable HTTP client (the Python SDK's, legacy mode): the reference
`server-everything sse` and a Python SDK server run with the SSE transport."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from conftest import E2E, free_port
from helpers import ProgressLog, run, text_of, wait_for_tool
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageResult, ListRootsResult, Root, TextContent

SSE_PEER = E2E / "peers/sse_server.py"


def client(url: str, **kw) -> Client:
    return Client(url, mode="legacy", read_timeout_seconds=30, **kw)


def sse_peer(stack, port: int = 0) -> str:
    return stack._python_peer("sse-peer", SSE_PEER, port=port) + "/sse"


def test_server_everything_over_legacy_sse(stack):
    upstream = stack.everything_server(mode="sse")
    gateway = stack.gateway({"ev": {"servers": [f"sse+{upstream}"]}}, routes=[("/mcp/ev", "ev")])
    asked: list = []

    async def sample(context, params):
        asked.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(text="sampled over SSE"), model="m", stop_reason="endTurn")

    async def roots(context):
        return ListRootsResult(roots=[Root(uri="file:///tmp/legacy-sse-root", name="root")])

    async def body():
        async with client(f"{gateway}/mcp/ev", sampling_callback=sample, list_roots_callback=roots) as c:
            assert "everything" in c.server_info.name
            await wait_for_tool(c, "trigger-sampling-request")
            assert text_of(await c.call_tool("echo", {"message": "over sse"})) == "Echo: over sse"
            progress = ProgressLog()
            result = await c.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=progress)
            assert "completed" in text_of(result).lower()
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3], progress.events
            # The server's requests to the client travel over its SSE stream and the
            # client's answers back through its endpoint.
            result = await c.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
            assert "sampled over SSE" in text_of(result)
            assert len(asked) == 1
            assert "legacy-sse-root" in text_of(await c.call_tool("get-roots-list", {}))

    run(body)


def test_python_sdk_sse_server_and_its_stream_ending(stack):
    upstream = sse_peer(stack)
    port = int(upstream.rsplit(":", 1)[1].split("/")[0])
    groups = {"py": {"servers": [f"sse+{upstream}"], "yaml": 'upstream_auth: {bearer: "member-secret"}'}}
    admin, token = free_port(), "legacy-sse-admin-token-0123456789"
    gateway = stack.gateway(groups, routes=[("/mcp/py", "py")], extra=f"admin:\n  port: {admin}\n  token: {token}\n")
    url = f"{gateway}/mcp/py"

    def bridge_state() -> dict:
        r = httpx.get(f"http://127.0.0.1:{admin}/api/v1/upstreams", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        [group] = [g for g in r.json()["groups"] if g["name"] == "py"]
        [server] = group["servers"]
        assert server["url"] == f"sse+{upstream}", server
        return server["stdio"]

    async def first_session():
        async with client(url) as c:
            assert text_of(await c.call_tool("echo", {"text": "hello"})) == "hello"
            progress = ProgressLog()
            assert text_of(await c.call_tool("count", {"n": 3}, progress_callback=progress)) == "3"
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3], progress.events
            # The group's credential reaches the server on the POSTs.
            seen = json.loads(text_of(await c.call_tool("headers", {})))
            assert seen.get("authorization") == "Bearer member-secret", seen
            # The admin API shows the connection behind the session.
            state = await anyio.to_thread.run_sync(bridge_state)
            assert state["kind"] == "legacy SSE server" and state["processes"] == 1, state
            # The server goes away: the stream ends, the session with it.
            stack.peer(upstream).stop()
            with anyio.fail_after(20):
                with pytest.raises(MCPError):
                    await c.call_tool("echo", {"text": "after the end"})

    run(first_session)
    # Back on the same port: a new session works.
    sse_peer(stack, port=port)

    async def second_session():
        async with client(url) as c:
            assert text_of(await c.call_tool("echo", {"text": "again"})) == "again"

    run(second_session)
