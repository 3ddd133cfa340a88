"""A WebSocket server behind the gateway (`url: ws://…`): npm `supergateway` serving the
reference `server-everything` (stdio) over WebSocket, driven by a Streamable HTTP client
(the Python SDK's, legacy mode)."""

from __future__ import annotations

import anyio
import pytest
from helpers import ProgressLog, run, text_of
from mcp import Client
from mcp.shared.exceptions import MCPError


def test_server_everything_over_websocket(stack):
    upstream = stack.supergateway_ws()
    gateway = stack.gateway({"ws": {"servers": [upstream]}}, routes=[("/mcp/ws", "ws")])
    url = f"{gateway}/mcp/ws"

    async def body():
        async with Client(url, mode="legacy", read_timeout_seconds=30) as c:
            assert "everything" in c.server_info.name
            names = {t.name for t in (await c.list_tools()).tools}
            assert "echo" in names, names
            assert text_of(await c.call_tool("echo", {"message": "over ws"})) == "Echo: over ws"
            progress = ProgressLog()
            result = await c.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=progress)
            assert "completed" in text_of(result).lower()
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3], progress.events
            # Two sessions, two sockets: each its own server state.
            async with Client(url, mode="legacy", read_timeout_seconds=30) as other:
                assert text_of(await other.call_tool("echo", {"message": "second"})) == "Echo: second"
            # The server goes away: the socket closes, the session ends with an error.
            stack.peer(upstream.rsplit("/", 1)[0]).stop()
            with anyio.fail_after(20):
                with pytest.raises(MCPError):
                    await c.call_tool("echo", {"message": "after the close"})

    run(body)
