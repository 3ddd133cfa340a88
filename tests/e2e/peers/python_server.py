#!/usr/bin/env python3
"""An upstream MCP server built on the Python SDK 2.x (`MCPServer`, Streamable HTTP).

It serves both protocol eras on `/mcp` (the 2026-07-28 stateless one and the stateful
initialize/session one). DNS-rebinding protection stays on and accepts exactly this
server's own authority (`127.0.0.1:PORT`) as `Host`, so a proxy that forwards the client's
`Host` gets `421`.

Usage: python_server.py [--port 0] [--name NAME]. Prints `listening on 127.0.0.1:PORT`.
Tools: `echo(text)`, `add(a, b)`, `whoami()` (the server name), `slow(steps)` (a progress
notification every 0.2 s, then "done"), `headers()` (the HTTP request headers this server
received with the call, as a JSON object with lower-case names).
"""

import argparse
import asyncio
import json
import sys

from loopback import bind, own_authority_only, serve
from mcp.server.mcpserver import Context, MCPServer


def build(name: str) -> MCPServer:
    mcp = MCPServer(name)

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def whoami() -> str:
        """Name of the replica that answered."""
        return name

    @mcp.tool()
    async def slow(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, 0.2 s apart, then return "done"."""
        for i in range(1, steps + 1):
            await asyncio.sleep(0.2)
            await ctx.report_progress(i, steps, f"step {i}")
        return "done"

    @mcp.tool()
    def headers(ctx: Context) -> str:
        """The HTTP request headers that carried this call (JSON, lower-case names)."""
        return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items()})

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="python-sdk")
    args = parser.parse_args()

    sock, port = bind(args.port)
    security = own_authority_only(port)
    serve(sock, build(args.name).streamable_http_app(transport_security=security))


if __name__ == "__main__":
    sys.exit(main())
