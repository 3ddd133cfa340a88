#!/usr/bin/env python3
"""The Python SDK 1.x client against an MCP endpoint, over WebSocket
(`mcp.client.websocket.websocket_client`: subprotocol `mcp`, one JSON-RPC message per text
frame). The 2.x SDK has no WebSocket client: run this with the 1.x virtualenv's python
(scripts/test makes .venv-mcp1 from requirements-mcp1.txt; the tests find it as MCP1_PYTHON).

Usage: py1_ws_client.py [--header "NAME: VALUE"]... URL [TOOL [JSON_ARGUMENTS]]
URL is ws:// or wss://. Initializes a `ClientSession`, lists tools (every page), calls TOOL
(default: the first tool whose name ends in "echo", with {"text": "hello from python 1.x"}),
closes the socket, and prints one JSON object on stdout:
  {"sdk": "1.x.y", "subprotocol": "mcp", "protocolVersion": "...", "serverInfo": {...},
   "capabilities": {...}, "tools": ["..."], "call": {"tool": "...", "isError": false,
   "text": "...", "content": [...]}}
Exits 1 with {"error": "..."} on stdout when anything fails.

`websocket_client` takes no headers: --header values reach the upgrade request through
the `websockets` connect it calls (`additional_headers`).
"""

import argparse
import json
import sys
import traceback
import warnings
from importlib.metadata import version

import anyio
import mcp.client.websocket as ws_transport
from mcp import ClientSession
from websockets.asyncio.client import connect

# The SDK marks its WebSocket client deprecated (WebSocket is no MCP transport of the
# spec's): it is the one under test here.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--header", action="append", default=[], help='"NAME: VALUE", on the upgrade request')
    parser.add_argument("url")
    parser.add_argument("tool", nargs="?")
    parser.add_argument("arguments", nargs="?", help="the tool's arguments, JSON")
    args = parser.parse_args()
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header {header!r}: NAME: VALUE")
        headers[name.strip()] = value.strip()
    args.headers = headers
    return args


async def main(args: argparse.Namespace, summary: dict) -> None:
    sockets = []

    def connect_with_headers(*a, **kw):
        c = connect(*a, additional_headers=args.headers, **kw)
        sockets.append(c)
        return c

    ws_transport.ws_connect = connect_with_headers
    async with ws_transport.websocket_client(args.url) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            summary["subprotocol"] = sockets[0].connection.subprotocol
            summary["protocolVersion"] = init.protocolVersion
            summary["serverInfo"] = init.serverInfo.model_dump(mode="json", exclude_none=True)
            summary["capabilities"] = init.capabilities.model_dump(mode="json", exclude_none=True)

            tools, cursor = [], None
            while True:
                page = await session.list_tools(cursor)
                tools += [t.name for t in page.tools]
                cursor = page.nextCursor
                if not cursor:
                    break
            summary["tools"] = tools

            tool = args.tool or next((t for t in tools if t.endswith("echo")), None)
            if tool:
                arguments = json.loads(args.arguments) if args.arguments else {"text": "hello from python 1.x"}
                result = await session.call_tool(tool, arguments)
                content = [c.model_dump(mode="json", exclude_none=True) for c in result.content]
                summary["call"] = {
                    "tool": tool,
                    "isError": bool(result.isError),
                    "text": "".join(c["text"] for c in content if c.get("type") == "text"),
                    "content": content,
                }


if __name__ == "__main__":
    args = parse_args()
    summary = {"sdk": version("mcp")}
    try:
        anyio.run(main, args, summary)
    except BaseException as exc:  # noqa: BLE001 - reported, then exit 1
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        print(json.dumps({**summary, "error": "".join(traceback.format_exception(exc))}))
        sys.exit(1)
    print(json.dumps(summary))
