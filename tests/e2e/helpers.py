"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import time

import anyio
import pytest

# What the README and demo/src/main.rs tell people to send with curl.
ACCEPT = "application/json, text/event-stream"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": ACCEPT}


def run(fn, *args):
    """Run an async test body."""
    return anyio.run(fn, *args)


def text_of(result) -> str:
    """The text of a `CallToolResult`'s content blocks, joined."""
    assert not result.is_error, f"tool returned an error: {result}"
    return "".join(block.text for block in result.content if getattr(block, "type", None) == "text")


class ProgressLog:
    """A progress callback that records (seconds since start, progress, total, message)."""

    def __init__(self):
        self.start = time.monotonic()
        self.events: list[tuple[float, float, float | None, str | None]] = []

    async def __call__(self, progress, total, message):
        self.events.append((time.monotonic() - self.start, progress, total, message))


def sse_messages(body: str) -> list[dict]:
    """The JSON-RPC messages carried in the `data:` lines of an SSE body."""
    messages, data = [], []
    for line in body.splitlines() + [""]:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            payload = "\n".join(data)
            data = []
            if payload.strip():
                messages.append(json.loads(payload))
    return messages


def jsonrpc_messages(response) -> list[dict]:
    """The JSON-RPC messages of a POST response, whether JSON or SSE."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        return [response.json()]
    assert ctype.startswith("text/event-stream"), f"unexpected content-type {ctype!r}: {response.text[:500]}"
    return sse_messages(response.text)


async def wait_for_tool(c, name: str, timeout: float = 15) -> set[str]:
    """server-everything registers its sampling, elicitation and roots tools once the session
    is initialized, if the client offered the capability: poll the list until `name` shows up."""
    names: set[str] = set()
    with anyio.move_on_after(timeout):
        while True:
            names = {t.name for t in (await c.list_tools()).tools}
            if name in names:
                return names
            await anyio.sleep(0.2)
    pytest.fail(f"{name} never listed; the last list: {sorted(names)}")
