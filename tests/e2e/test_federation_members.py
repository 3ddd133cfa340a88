"""Caching and transforms on a virtual server's members, with the official Python SDK on
both ends: two peers/catalog_server.py members (Python SDK 2.x `MCPServer`, which checks
the modern era's routing headers against the body) behind one virtual server; `files`
has its `calls` tool cached, `w` its `echo` renamed and its results redacted. The SDK
`Client`, in both eras, sees the catalog as the rules say, and a kept result is served
without asking the member again."""

import pytest
from helpers import run, text_of
from mcp.shared.exceptions import MCPError
from test_federation import WEB_TOOLS, client, two_catalogs

MODERN = "2026-07-28"

MEMBER_RULES = r"""
cache:
  routes:
    - path: /mcp
      member: files
      tools: [{name: calls, ttl: 5m}]
transforms:
  - path: /mcp
    member: w
    tools:
      - {match: echo, rename: say, description: "Say it back"}
    results:
      redact: [{pattern: "secret-\\w+", with: "[redacted]"}]
"""


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_members_rules_shape_its_part_of_the_catalog(stack, mode):
    gateway, _, _ = two_catalogs(stack, extra=MEMBER_RULES)

    async def body():
        async with client(gateway, mode) as c:
            assert (c.protocol_version == MODERN) == (mode == "auto")
            tools = {t.name: t for t in (await c.list_tools()).tools}
            # w's echo is listed by its new name, prefixed; files' tools are untouched.
            assert "w__say" in tools and "w__echo" not in tools, sorted(tools)
            assert tools["w__say"].description == "Say it back"
            assert WEB_TOOLS - {"w__echo"} <= set(tools)
            assert "files__echo" in tools

            # Called by its new name, the member gets its own (the modern SDK server
            # rejects a call whose Mcp-Name differs from the body's), and the result
            # is redacted.
            said = text_of(await c.call_tool("w__say", {"text": "a secret-xyz b"}))
            assert said == "a [redacted] b"
            # The name the rename replaced is unknown now.
            with pytest.raises(MCPError, match="unknown tool"):
                await c.call_tool("w__echo", {"text": "x"})

            # files' `calls` answers how many calls the member served before it: a
            # kept result says the same number again though other calls went through
            # (uncached, it would have counted them).
            first = text_of(await c.call_tool("files__calls", {}))
            assert text_of(await c.call_tool("files__echo", {"text": "not kept"})) == "not kept"
            assert text_of(await c.call_tool("files__calls", {})) == first

    run(body)
