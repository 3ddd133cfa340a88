"""Two gateway processes sharing a session key serve one stateful session between them.

The gateway seals each upstream `Mcp-Session-Id` with the keys in `sessions.keys`, so a
sealed id opens on any gateway holding the same key and is routed to the replica that
minted it, with no shared store. A gateway with another key refuses the id with `404`.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

import anyio
import httpx
import httpx2
from helpers import JSON_HEADERS, ProgressLog, jsonrpc_messages, run, text_of
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_everything import long_running_tool
from test_replicas import replica_of

PROTOCOL = "2025-11-25"


def session_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def sessions_yaml(key: str) -> str:
    return f'sessions:\n  keys: ["{key}"]\n'


@dataclass
class Exchange:
    """One HTTP request the client sent, the gateway it went to, and what came back."""

    method: str
    port: int
    session_id: str | None
    protocol_version: str | None
    status: int | None = None
    returned_session_id: str | None = None


class AlternatingTransport(httpx2.AsyncBaseTransport):
    """Sends each request to the next port in turn: A, B, A, B, ... whatever its method."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.inner = httpx2.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.exchanges) % len(self.ports)]
        request.url = request.url.copy_with(port=port)
        request.headers["Host"] = f"{request.url.host}:{port}"
        exchange = Exchange(
            request.method,
            port,
            request.headers.get("mcp-session-id"),
            request.headers.get("mcp-protocol-version"),
        )
        self.exchanges.append(exchange)
        response = await self.inner.handle_async_request(request)
        exchange.status = response.status_code
        exchange.returned_session_id = response.headers.get("mcp-session-id")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def methods(self) -> set[str]:
        return {e.method for e in self.exchanges}

    def describe(self) -> str:
        return "\n".join(
            f"{i:3} {e.method:6} :{e.port} status={e.status} session={'yes' if e.session_id else 'no'}"
            for i, e in enumerate(self.exchanges)
        )


def port_of(base: str) -> int:
    return httpx.URL(base).port


def test_session_spans_gateways_sharing_a_key(stack):
    first = stack.everything_server("everything-r1", env={"E2E_REPLICA": "r1"})
    second = stack.everything_server("everything-r2", env={"E2E_REPLICA": "r2"})
    groups = {"default": {"strategy": "round_robin", "servers": [first, second]}}
    key = session_key()
    gateway_a = stack.gateway(groups, extra=sessions_yaml(key))
    gateway_b = stack.gateway(groups, extra=sessions_yaml(key))
    other_key = session_key()
    assert other_key != key
    gateway_c = stack.gateway(groups, extra=sessions_yaml(other_key))
    ports = [port_of(gateway_a), port_of(gateway_b)]

    transport = AlternatingTransport(ports)

    async def body():
        async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(30, read=300)) as http:
            connection = streamable_http_client(f"{gateway_a}/mcp", http_client=http)
            async with Client(connection, mode="legacy", read_timeout_seconds=30) as client:
                assert client.protocol_version == PROTOCOL
                assert client.server_info is not None and "everything" in client.server_info.name

                # initialize went to A, notifications/initialized to B: both answered.
                initialize = transport.exchanges[0]
                assert (initialize.method, initialize.port, initialize.session_id) == ("POST", ports[0], None)
                sealed = initialize.returned_session_id
                assert sealed, f"initialize returned no Mcp-Session-Id\n{transport.describe()}"

                names = {tool.name for tool in (await client.list_tools()).tools}
                assert "echo" in names
                replica = await replica_of(client)
                assert replica in {"r1", "r2"}

                for i in range(6):
                    message = f"call {i}"
                    assert text_of(await client.call_tool("echo", {"message": message})) == f"Echo: {message}"
                    assert await replica_of(client) == replica

                tool = long_running_tool(names)
                progress = ProgressLog()
                result = await client.call_tool(tool, {"duration": 1, "steps": 3}, progress_callback=progress)
                assert "completed" in text_of(result).lower()
                assert [p for _, p, _, _ in progress.events] == [1, 2, 3], progress.events
                assert await replica_of(client) == replica

                # The SDK opens its standing GET stream in the background once the session is
                # initialized; wait until it has been sent (no timing assert: just a bound).
                with anyio.fail_after(20):
                    while "GET" not in transport.methods():
                        await anyio.sleep(0.05)
                assert text_of(await client.call_tool("echo", {"message": "after GET"})) == "Echo: after GET"
                assert await replica_of(client) == replica

                # A gateway with another key cannot open the sealed id: 404 with -32001,
                # while the session is alive on its replica.
                async with httpx.AsyncClient(timeout=30) as plain:
                    refused = await plain.post(
                        f"{gateway_c}/mcp",
                        headers={**JSON_HEADERS, "Mcp-Session-Id": sealed, "MCP-Protocol-Version": PROTOCOL},
                        json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
                    )
                assert refused.status_code == 404, refused.text
                assert refused.json()["error"]["code"] == -32001, refused.text

                # The refusal did not touch the session: it still works through A and B.
                for i in range(2):
                    assert text_of(await client.call_tool("echo", {"message": f"still {i}"})) == f"Echo: still {i}"
                assert await replica_of(client) == replica

                deletes_before_exit = [e for e in transport.exchanges if e.method == "DELETE"]
                assert not deletes_before_exit
            # Leaving the client closes the session: the SDK sends DELETE.

        log = transport.describe()
        exchanges = transport.exchanges
        deletes = [e for e in exchanges if e.method == "DELETE"]
        assert len(deletes) == 1, f"the SDK did not close the session with DELETE\n{log}"
        delete = deletes[0]
        assert delete.status in (200, 204), log
        close_index = exchanges.index(delete)

        # Both gateways served the session, with every kind of request.
        assert {e.port for e in exchanges} == set(ports), log
        for port in ports:
            assert sum(e.port == port for e in exchanges) >= 5, log
        assert {"POST", "GET", "DELETE"} <= transport.methods(), log
        # One session throughout: every request after initialize carried the same sealed id.
        assert all(e.session_id == sealed for e in exchanges[1:]), log
        assert all(e.protocol_version == PROTOCOL for e in exchanges[1:]), log
        # Everything before the close succeeded (the GET stream may still be open, status 200).
        for e in exchanges[:close_index]:
            assert e.status is not None and 200 <= e.status < 300, log

        # The session is gone on its replica: a request through the gateway that did not
        # close it, with the same id, is refused by the replica (server-everything answers 400
        # "No valid session ID" for an id it does not know; the gateway passes it through).
        other = ports[1] if delete.port == ports[0] else ports[0]
        async with httpx.AsyncClient(timeout=30) as plain:
            after = await plain.post(
                f"http://127.0.0.1:{other}/mcp",
                headers={**JSON_HEADERS, "Mcp-Session-Id": sealed, "MCP-Protocol-Version": PROTOCOL},
                json={"jsonrpc": "2.0", "id": 100, "method": "tools/list"},
            )
        assert after.status_code in (400, 404), after.text
        [message] = jsonrpc_messages(after)
        assert "error" in message and "result" not in message, message

    run(body)
