"""Python SDK 2.x on both ends: an `MCPServer` upstream, the SDK `Client` through the gateway."""

import httpx
import pytest
from helpers import JSON_HEADERS, ProgressLog, run, text_of
from mcp import Client

MODERN = "2026-07-28"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_sdk_client_through_gateway(stack, mode):
    upstream = stack.python_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}})

    async def body():
        async with Client(f"{gateway}/mcp", mode=mode, read_timeout_seconds=30) as client:
            if mode == "auto":
                # The upstream speaks 2026-07-28: a working gateway lets the discover
                # probe through, so the client must not have fallen back to initialize.
                assert client.protocol_version == MODERN
            else:
                assert client.protocol_version < MODERN
            assert client.server_info is not None and client.server_info.name == "python-sdk"

            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo", "add", "slow"} <= tools

            assert text_of(await client.call_tool("add", {"a": 20, "b": 22})) == "42"
            text = "héllo, gateway ✓"
            assert text_of(await client.call_tool("echo", {"text": text})) == text

            progress = ProgressLog()
            result = await client.call_tool("slow", {"steps": 3}, progress_callback=progress)
            assert text_of(result) == "done"
            assert [p for _, p, _, _ in progress.events] == [1, 2, 3]

    run(body)


def test_python_upstream_refuses_foreign_host(stack):
    """Guard for the test above: the upstream really checks `Host` (DNS-rebinding protection),
    so the SDK test only passes if the gateway sends the upstream's own authority."""
    upstream = stack.python_server()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    foreign = httpx.post(upstream, json=body, headers={**JSON_HEADERS, "Host": "127.0.0.1:1"}, timeout=10)
    assert foreign.status_code == 421, foreign.text
