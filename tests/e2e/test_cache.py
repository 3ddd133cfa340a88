"""The cache with the official Python SDK on both ends: an `MCPServer` upstream behind a
cached route, the SDK `Client` (modern and legacy) listing and calling through it. The
second call of a listed tool is answered by the gateway (its metrics say so) and the SDK
accepts that answer in either era; the second list too for a legacy client, while the SDK
server's modern lists say `ttlMs: 0`, which the gateway honours by keeping nothing."""

import httpx
import pytest
from conftest import free_port
from helpers import run, text_of
from mcp import Client

MODERN = "2026-07-28"


def cache_yaml(admin_port: int) -> str:
    return f"""
admin:
  port: {admin_port}
cache:
  routes:
    - path: /mcp
      lists: {{ttl: 30s}}
      tools: [{{name: add, ttl: 5m}}]
"""


def cache_counts(admin_port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("mcp_gateway_cache_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            result = labels.split('result="')[1].split('"')[0]
            out[result] = out.get(result, 0) + float(value)
    return out


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_sdk_lists_and_calls_are_served_from_the_cache(stack, mode):
    upstream = stack.python_server()
    admin = free_port()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=cache_yaml(admin))

    async def body():
        async with Client(f"{gateway}/mcp", mode=mode, read_timeout_seconds=30) as client:
            assert (client.protocol_version == MODERN) == (mode == "auto")
            first = {t.name for t in (await client.list_tools()).tools}
            again = {t.name for t in (await client.list_tools()).tools}
            assert first == again and {"echo", "add"} <= first
            assert text_of(await client.call_tool("add", {"a": 20, "b": 22})) == "42"
            assert text_of(await client.call_tool("add", {"b": 22, "a": 20})) == "42"
            # Other arguments are another question; an unlisted tool is never kept.
            assert text_of(await client.call_tool("add", {"a": 1, "b": 2})) == "3"
            assert text_of(await client.call_tool("echo", {"text": "x"})) == "x"
            assert text_of(await client.call_tool("echo", {"text": "x"})) == "x"

    run(body)
    counts = cache_counts(admin)
    if mode == "legacy":
        # The second list and the second `add(20, 22)` (its arguments in another order).
        assert counts == {"hit": 2, "miss": 3}, counts
    else:
        # The SDK server's modern lists say `ttlMs: 0`: honoured, never kept (both lists
        # were misses, as was the client's `server/discover`); its tool results carry no
        # cache fields: the operator's ttl.
        assert counts == {"hit": 1, "miss": 5}, counts
