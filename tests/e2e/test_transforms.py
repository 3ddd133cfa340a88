"""Transforms with the official Python SDK on both ends: an `MCPServer` upstream (which
checks the modern era's routing headers against the body) behind a route with a renamed,
a hidden and an argument-injected tool and result redaction and truncation; the SDK
`Client` in both eras sees the tools as the transforms say and calls them by those names."""

import pytest
from helpers import run, text_of
from mcp import Client

MODERN = "2026-07-28"

TRANSFORMS = r"""
transforms:
  - path: /mcp
    tools:
      - {match: echo, rename: say, description: "Say it back"}
      - {match: whoami, hide: true}
      - {match: add, set_args: {b: 100}, overwrite: true}
    results:
      max_text_bytes: 40
      redact: [{pattern: "secret-\\w+", with: "[redacted]"}]
"""


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_sdk_sees_and_calls_the_transformed_tools(stack, mode):
    upstream = stack.python_server()
    gateway = stack.gateway({"default": {"servers": [upstream]}}, extra=TRANSFORMS)

    async def body():
        async with Client(f"{gateway}/mcp", mode=mode, read_timeout_seconds=30) as client:
            assert (client.protocol_version == MODERN) == (mode == "auto")
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "say" in tools and "echo" not in tools and "whoami" not in tools, sorted(tools)
            assert tools["say"].description == "Say it back"
            # b is the gateway's: gone from the schema clients see.
            assert "b" not in tools["add"].input_schema.get("properties", {})
            assert "b" not in tools["add"].input_schema.get("required", [])

            # Renamed: reaches the server as echo (a modern server checks Mcp-Name
            # against the body: the gateway re-emitted it), the secret redacted.
            said = await client.call_tool("say", {"text": "hello secret-abc"})
            assert text_of(said) == "hello [redacted]"
            # Injected, whatever the client sends.
            assert text_of(await client.call_tool("add", {"a": 1, "b": 2})) == "101"
            # Long text is cut with the gateway's marker.
            long = await client.call_tool("say", {"text": "x" * 100})
            assert text_of(long).startswith("x" * 40) and "truncated by mcp-gateway: 60 more bytes" in text_of(long)
            # The old name and the hidden tool are unknown tools.
            for name in ("echo", "whoami"):
                with pytest.raises(Exception) as refused:
                    await client.call_tool(name, {"text": "x"})
                assert "Unknown tool" in str(refused.value)

    run(body)
