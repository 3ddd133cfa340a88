"""Serving a Python peer's ASGI app on a loopback port (0: one the system picks)."""

import asyncio
import socket

import uvicorn


def bind(port: int) -> tuple[socket.socket, int]:
    """A socket bound to `127.0.0.1:port`, and the port it got."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock, sock.getsockname()[1]


def own_authority_only(port: int):
    """DNS-rebinding protection that accepts exactly this peer's own authority
    (`127.0.0.1:PORT`) as `Host` and its own origin: a proxy that forwards the client's
    `Host` gets `421`."""
    from mcp.server.transport_security import TransportSecuritySettings

    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"127.0.0.1:{port}"],
        allowed_origins=[f"http://127.0.0.1:{port}"],
    )


def serve(sock: socket.socket, app) -> None:
    """Serve `app` on `sock` until killed, after printing `listening on 127.0.0.1:PORT`."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def run() -> None:
        sock.listen(128)
        print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await server.serve(sockets=[sock])

    asyncio.run(run())
