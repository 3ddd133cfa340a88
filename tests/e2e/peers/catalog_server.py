#!/usr/bin/env python3
"""An upstream MCP server with a bit of everything in its catalog, for the virtual-server tests.

Built on the Python SDK 2.x (`MCPServer`, Streamable HTTP on `/mcp`, both protocol eras),
with DNS-rebinding protection on, like peers/python_server.py.

Usage: catalog_server.py [--port 0] [--name NAME] [--page-size N] [--extra-resources N].
Prints `listening on 127.0.0.1:PORT`.

Tools:
  echo(text)        the text unchanged
  fetch(url)        "NAME fetched URL"
  fetch_raw(url)    "NAME fetched raw URL"
  link(path)        a `resource_link` content block to `file:///PATH`
  embed(path)       an embedded text resource `file:///PATH`
  whoami()          NAME
  calls()           how many tool calls this process served before this one
  initializations() how many `initialize` requests this process answered
  slow(steps)       a progress notification every 0.3 s, then "done"
  ask(question)     elicits {answer} from the client: "NAME heard ANSWER"
  think(question)   samples the client's model: "NAME sampled TEXT"
  client_roots()    lists the client's roots: their URIs, one a line
Prompts: `greet(name)`, `summarize(topic)`; a completion for `greet`'s `name` argument.
Resources: `file:///readme.txt`, `file:///notes/todo.txt`, `mem:scratch`, `ui://panel`,
plus `file:///extra-<i>.txt` for i < --extra-resources; the template `file:///{path}`.
With --page-size N, `resources/list` answers N resources a page, with an opaque
`nextCursor`; a cursor this server did not mint gets -32602.
"""

import argparse
import asyncio
import base64
import sys
from typing import Annotated

from loopback import bind, own_authority_only, serve
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    Completion,
    CreateMessageResult,
    EmbeddedResource,
    ListResourcesResult,
    ListRootsResult,
    PaginatedRequestParams,
    PromptReference,
    ResourceLink,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)
from pydantic import BaseModel


class Answer(BaseModel):
    answer: str


def ask_the_user(question: str):
    return Elicit(question, Answer)


def ask_the_model(question: str):
    return Sample([SamplingMessage(role="user", content=TextContent(text=question))], max_tokens=50)


def ask_for_roots():
    return ListRoots()


def build(name: str, page_size: int | None, extra_resources: int) -> MCPServer:
    mcp = MCPServer(name)
    served = {"calls": 0, "initialize": 0}

    async def count_initialize(ctx, call_next):
        if ctx.method == "initialize":
            served["initialize"] += 1
        return await call_next(ctx)

    mcp._lowlevel_server.middleware.append(count_initialize)

    def count() -> int:
        before = served["calls"]
        served["calls"] += 1
        return before

    # ---- tools -------------------------------------------------------------------------

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        count()
        return text

    @mcp.tool()
    def fetch(url: str) -> str:
        """Pretend to fetch a URL."""
        count()
        return f"{name} fetched {url}"

    @mcp.tool()
    def fetch_raw(url: str) -> str:
        """Pretend to fetch a URL, raw."""
        count()
        return f"{name} fetched raw {url}"

    @mcp.tool()
    def link(path: str) -> list[ResourceLink | TextContent]:
        """A resource_link to file:///PATH."""
        count()
        return [
            TextContent(text=f"see {path}"),
            ResourceLink(name=path, uri=f"file:///{path}", mime_type="text/plain"),
        ]

    @mcp.tool()
    def embed(path: str) -> list[EmbeddedResource]:
        """The text resource file:///PATH, embedded."""
        count()
        return [EmbeddedResource(resource=TextResourceContents(uri=f"file:///{path}", text=f"{name}: {path}"))]

    @mcp.tool()
    def whoami() -> str:
        """This server's name."""
        count()
        return name

    @mcp.tool()
    async def touch(uri: str, ctx: Context) -> str:
        """Change the tool list and the resource `uri` (list_changed and resources/updated
        to the listening clients)."""
        count()
        await ctx.notify_tools_changed()
        await ctx.notify_resource_updated(uri)
        return f"{name} touched {uri}"

    @mcp.tool()
    def calls() -> int:
        """How many tool calls this process served before this one."""
        return count()

    @mcp.tool()
    def initializations() -> int:
        """How many `initialize` requests this process answered (legacy-era sessions begun)."""
        count()
        return served["initialize"]

    @mcp.tool()
    async def slow(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, 0.3 s apart, then return "done"."""
        count()
        for i in range(1, steps + 1):
            await asyncio.sleep(0.3)
            await ctx.report_progress(i, steps, f"step {i}")
        return "done"

    # Server->client requests, in either era: mid-call requests on the call's stream up to
    # 2025-11-25, an InputRequiredResult and the client's retry from 2026-07-28 on.

    @mcp.tool()
    def ask(question: str, answer: Annotated[Answer, Resolve(ask_the_user)]) -> str:
        """Elicit an answer to `question` from the client."""
        count()
        return f"{name} heard {answer.answer}"

    @mcp.tool()
    def think(question: str, sampled: Annotated[CreateMessageResult, Resolve(ask_the_model)]) -> str:
        """Sample the client's model with `question`."""
        count()
        return f"{name} sampled {sampled.content.text}"

    @mcp.tool()
    def client_roots(roots: Annotated[ListRootsResult, Resolve(ask_for_roots)]) -> str:
        """The client's roots, one URI a line."""
        count()
        return "\n".join(str(root.uri) for root in roots.roots)

    # ---- prompts -----------------------------------------------------------------------

    @mcp.prompt()
    def greet(name: str) -> str:
        """Greet someone."""
        return f"Hello, {name}!"

    @mcp.prompt()
    def summarize(topic: str) -> str:
        """Ask for a summary."""
        return f"Summarize {topic}."

    @mcp.completion()
    async def complete(ref, argument, context):
        if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
            names = ["alice", "albert", "bob"]
            return Completion(values=[n for n in names if n.startswith(argument.value)])
        return None

    # ---- resources ---------------------------------------------------------------------

    @mcp.resource("file:///readme.txt", name="readme", mime_type="text/plain")
    def readme() -> str:
        return f"readme of {name}"

    @mcp.resource("file:///notes/todo.txt", name="todo", mime_type="text/plain")
    def todo() -> str:
        return f"todo of {name}"

    @mcp.resource("mem:scratch", name="scratch", mime_type="text/plain")
    def scratch() -> str:
        return f"scratch of {name}"

    @mcp.resource("ui://panel", name="panel", mime_type="text/html")
    def panel() -> str:
        return f"<p>panel of {name}</p>"

    def extra(i: int):
        return lambda: f"extra {i} of {name}"

    for i in range(extra_resources):
        mcp.resource(f"file:///extra-{i}.txt", name=f"extra-{i}", mime_type="text/plain")(extra(i))

    @mcp.resource("file:///{path}", name="file", mime_type="text/plain")
    def any_file(path: str) -> str:
        return f"{name} file {path}"

    if page_size:

        async def list_resources(ctx, params: PaginatedRequestParams) -> ListResourcesResult:
            everything = await mcp.list_resources()
            start = 0
            if params.cursor is not None:
                try:
                    token = base64.urlsafe_b64decode(params.cursor.encode()).decode()
                    label, offset = token.split(":")
                    if label != f"{name}-page":
                        raise ValueError(label)
                    start = int(offset)
                except (ValueError, UnicodeDecodeError) as e:
                    raise MCPError(code=INVALID_PARAMS, message=f"invalid cursor: {e}") from e
            end = start + page_size
            next_cursor = None
            if end < len(everything):
                next_cursor = base64.urlsafe_b64encode(f"{name}-page:{end}".encode()).decode()
            return ListResourcesResult(resources=everything[start:end], next_cursor=next_cursor)

        mcp._lowlevel_server.add_request_handler("resources/list", PaginatedRequestParams, list_resources)

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="catalog")
    parser.add_argument("--page-size", type=int, default=0)
    parser.add_argument("--extra-resources", type=int, default=0)
    args = parser.parse_args()

    sock, port = bind(args.port)
    security = own_authority_only(port)
    app = build(args.name, args.page_size or None, args.extra_resources).streamable_http_app(transport_security=security)
    serve(sock, app)


if __name__ == "__main__":
    sys.exit(main())
