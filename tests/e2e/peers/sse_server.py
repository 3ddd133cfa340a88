"""The Python SDK 2.x `MCPServer` over the legacy HTTP+SSE transport (2024-11-05):
`GET /sse` opens the stream whose `endpoint` event names `/messages/?session_id=…`.

Tools: `echo(text)`, `count(n)` (reports progress 1..n, then returns n), `headers()` (the
HTTP headers of the POST that carried the call, JSON). DNS-rebinding protection accepts
only this peer's own authority, as an SDK server on loopback does by default.
Prints `listening on 127.0.0.1:PORT`.
"""

import argparse
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
    async def count(n: int, ctx: Context) -> int:
        """Report progress 1..n, then return n."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, n)
        return n

    @mcp.tool()
    def headers(ctx: Context) -> str:
        """The HTTP request headers that carried this call (JSON, lower-case names)."""
        return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items()})

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="sse-peer")
    args = parser.parse_args()
    sock, port = bind(args.port)
    serve(sock, build(args.name).sse_app(transport_security=own_authority_only(port)))


if __name__ == "__main__":
    sys.exit(main())
