"""The reference `server-everything` (TypeScript SDK, stateful, SSE) behind the gateway."""

import time

from helpers import ProgressLog, run, text_of
from mcp import Client


def long_running_tool(names):
    """The long-running progress tool: `trigger-long-running-operation` today, `longRunningOperation` before."""
    found = [n for n in names if "long" in n.lower() and "running" in n.lower()]
    assert found, f"no long-running tool among {sorted(names)}"
    return found[0]


def test_everything_legacy_session(stack):
    upstream = stack.everything_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}})

    async def body():
        async with Client(f"{gateway}/mcp", mode="legacy", read_timeout_seconds=30) as client:
            assert client.server_info is not None and "everything" in client.server_info.name
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "echo" in names

            assert text_of(await client.call_tool("echo", {"message": "through the gateway"})) == (
                "Echo: through the gateway"
            )

            tool = long_running_tool(names)
            progress = ProgressLog()
            result = await client.call_tool(tool, {"duration": 2, "steps": 4}, progress_callback=progress)
            finished = time.monotonic() - progress.start
            assert "completed" in text_of(result).lower()
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3, 4], progress.events
            assert all(total == 4 for _, _, total, _ in progress.events)
            # Streamed, not buffered: the first step arrives about 1.5 s before the result.
            first = progress.events[0][0]
            assert finished - first > 1.0, f"progress arrived late: first at {first:.2f}s, result at {finished:.2f}s"

            # The session still works after the stream ended.
            assert text_of(await client.call_tool("echo", {"message": "again"})) == "Echo: again"

    run(body)
