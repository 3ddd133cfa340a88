"""The Python SDK 2.x `MCPServer` as a Streamable HTTP ASGI app for uvicorn to serve on a Unix
socket: `python -m uvicorn --uds PATH --app-dir peers unix_server:app`.

Tools: `echo(text)`, `add(a, b)`. DNS-rebinding protection is off: no
browser reaches a Unix socket, and its file mode decides who may connect.
"""

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

mcp = MCPServer("unix-socket-peer")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


app = mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
