"""An upstream on a Unix socket (`url: unix:///path/to.sock:/mcp`): the Python SDK 2.x server
served by `uvicorn --uds`, driven by the Python SDK client through the gateway."""

from helpers import run, text_of
from mcp import Client


def test_python_sdk_server_on_a_unix_socket(stack, tmp_path):
    upstream = stack.unix_server(tmp_path / "s.sock")
    assert upstream == f"unix://{tmp_path}/s.sock:/mcp"
    gateway = stack.gateway({"local": {"servers": [upstream]}}, routes=[("/mcp/local", "local")])

    async def body():
        async with Client(f"{gateway}/mcp/local", mode="legacy", read_timeout_seconds=30) as client:
            assert client.server_info is not None and client.server_info.name == "unix-socket-peer", client.server_info
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo", "add"} <= names, names
            assert text_of(await client.call_tool("echo", {"text": "over a Unix socket"})) == "over a Unix socket"
            assert text_of(await client.call_tool("add", {"a": 40, "b": 2})) == "42"

    run(body)
