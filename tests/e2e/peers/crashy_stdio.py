#!/usr/bin/env python3
"""A stdio MCP server built on the Python SDK 2.x (`MCPServer`, `run("stdio")`) that can be
made to die in the middle of a call.

Usage: crashy_stdio.py [--name NAME] [--stubborn] [ANY MORE ARGUMENTS, ignored: a marker to
find the process by its command line]. Tools: `echo(text)`, `pid()` (this process's id),
`crash()` (the process exits with status 1 at once, leaving the call unanswered).
`--stubborn`: SIGTERM is ignored and the process stays after its stdin closes, so only
SIGKILL ends it.
"""

import argparse
import os
import signal
import sys
import threading
import time

from mcp.server.mcpserver import MCPServer


def build(name: str) -> MCPServer:
    mcp = MCPServer(name)

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def pid() -> int:
        """This server process's id."""
        return os.getpid()

    @mcp.tool()
    def crash() -> str:
        """Exit the process at once, without answering."""
        sys.stdout.flush()
        os._exit(1)

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="crashy")
    parser.add_argument("--stubborn", action="store_true")
    args, _ = parser.parse_known_args()
    if args.stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Not a daemon: the interpreter waits for it after the server returns (stdin closed).
        threading.Thread(target=lambda: time.sleep(3600), name="stay").start()
    build(args.name).run("stdio")


if __name__ == "__main__":
    sys.exit(main())
