"""Two stateful replicas in one round-robin group: every session stays on the replica that minted it."""

import json
from contextlib import AsyncExitStack

from helpers import run, text_of
from mcp import Client


async def replica_of(client) -> str:
    """Which replica answered, from its environment (`get-env`; `printEnv` in older releases)."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    tool = "get-env" if "get-env" in names else "printEnv"
    env = json.loads(text_of(await client.call_tool(tool, {})))
    return env["E2E_REPLICA"]


def test_round_robin_sessions_stick_to_their_replica(stack):
    first = stack.everything_server("everything-r1", env={"E2E_REPLICA": "r1"})
    second = stack.everything_server("everything-r2", env={"E2E_REPLICA": "r2"})
    gateway = stack.gateway({"default": {"strategy": "round_robin", "servers": [first, second]}})

    async def body():
        async with AsyncExitStack() as sessions_stack:
            sessions = []
            # Open sessions until round robin has put at least one on each replica.
            for _ in range(6):
                client = await sessions_stack.enter_async_context(
                    Client(f"{gateway}/mcp", mode="legacy", read_timeout_seconds=30)
                )
                sessions.append((client, await replica_of(client)))
                if {replica for _, replica in sessions} == {"r1", "r2"}:
                    break
            seen = [replica for _, replica in sessions]
            assert set(seen) == {"r1", "r2"}, f"round robin never used both replicas: {seen}"

            # Interleave calls across the open sessions: a request sent to the other replica
            # would get "400 No valid session ID" and the call would raise.
            for round_ in range(3):
                for i, (client, replica) in enumerate(sessions):
                    message = f"session {i} round {round_}"
                    assert text_of(await client.call_tool("echo", {"message": message})) == f"Echo: {message}"
                    assert await replica_of(client) == replica

    run(body)
