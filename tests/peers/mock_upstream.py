#!/usr/bin/env python3
"""A scriptable upstream MCP server for the gateway's integration tests.

Standard library only. It answers JSON-RPC POSTs with a result that describes what it
received (path, headers, body length and SHA-256, its own id), so a test can check what
the gateway forwarded. Behaviour by method / tool name:

* ``initialize``: mints ``Mcp-Session-Id: <id>-session-<n>``; its result also has the
  client's ``protocolVersion``, capabilities (tools, prompts, resources with subscribe),
  ``serverInfo`` and ``instructions``;
* every result of a request carries the request's ``params`` as received;
* ``resources/read``: also ``contents`` (the URI asked for) and ``ttlMs: 60000``,
  ``cacheScope: "public"``;
* ``tools/call`` ``stream``: an SSE response: one event at once, then after
  ``arguments.delay`` seconds the final result (``arguments.idle`` to stay silent);
  if the client went away the stream is recorded as cancelled (see ``GET /_state``);
  with ``arguments.watch`` (and ``idle``) a client that closes the connection while the
  stream is silent is noticed at once (and counted as cancelled); ``arguments.head_delay``
  (with ``watch``) stays silent that long before even the response header;
* ``tools/call`` ``status``: answers with HTTP status ``arguments.code``, after an
  informational response for each code in ``arguments.early`` (e.g. ``[103]``);
* ``tools/call`` ``slow``: sends nothing at all (not even headers) for ``arguments.delay``
  seconds (default 30), then the result;
* ``tools/call`` ``mint_session``: answers with a fresh ``Mcp-Session-Id: <id>-raw-<n>``
  (whatever the protocol version);
* ``tools/call`` ``switch``: answers ``101 Switching Protocols`` (``Upgrade: websocket``)
  and then raw bytes, as a server taking over the connection would;
* ``tools/call`` ``hop``: a normal answer carrying hop-by-hop response fields
  (``Connection: X-Secret``, ``X-Secret``, ``Keep-Alive``, ``Proxy-Authenticate``,
  ``Proxy-Connection``, ``Upgrade``) and ``X-Kept``, an end-to-end one;
* ``tools/list``, ``prompts/list``, ``resources/list``, ``resources/templates/list``:
  a few items each (see ``LISTS``); as SSE (a progress event, then the result) when
  ``params._meta.sse`` is true;
* notifications and responses: ``202`` with no body (the last response and the last
  notification are kept in ``GET /_state`` as ``last_response``, ``last_notification``);
* GET with ``?notify``: an SSE stream of a ``notifications/message`` (its data: what the
  GET carried), ``notifications/tools/list_changed``, ``notifications/resources/updated``
  (``mem://public/readme``) and a ``roots/list`` request (id ``0``, progress token ``5``), event ids
  ``<id>-1`` … ``<id>-4``, then silence for ``?delay=`` seconds (default 30);
* GET with ``Accept: text/event-stream``: an SSE stream with one ``ready`` event, then
  one more event after ``?delay=`` seconds; with ``?list=FRAME`` (or a ``Last-Event-ID``
  starting with ``list``: a resumed stream) instead one event carrying a ``tools/list``
  result (id 7), framed as ``FRAME`` says (see ``sse_frame``), and ``?ct=`` as the
  ``Content-Type``;
* list requests wait ``_meta.delay`` seconds before answering;
* a ``tools/call`` with ``arguments.reply_text`` answers that text as its ``content``;
* ``subscriptions/listen``: an SSE stream, the acknowledgment first, then a
  ``notifications/tools/list_changed`` for each ``tools/call`` of ``change_lists``
  (``listeners`` in ``GET /_state`` counts the open streams);
* list requests as SSE (``_meta.sse``) take ``_meta.frame`` and ``_meta.ct`` the same way,
  and ``_meta.linger`` (seconds the stream stays open after its result event);
  with ``_meta.gzip`` a JSON list answer comes gzip-compressed whatever was accepted;
  ``vendor/tools`` (a method of its own) answers like ``tools/list``;
* batches: each request answered with the description, plus its list for list methods;
* DELETE: ``200``.

``GET /_state`` returns counters (and ``health_probe``: the last health-check request). Flags: ``--port`` (0 = any), ``--id``, ``--unix PATH``,
``--tls CERT KEY``, ``--strict-sessions`` (a request carrying an ``Mcp-Session-Id``
this process did not mint gets ``404``, as after a restart), ``--echo-session`` (every JSON answer to a request carrying
``Mcp-Session-Id`` carries it back, as SDK servers do). Prints ``listening on HOST:PORT`` (or the socket path) when ready.
"""

import argparse
import gzip
import hashlib
import json
import os
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"requests": 0, "cancelled": 0, "completed_streams": 0, "sessions": 0, "deletes": 0,
         "listeners": 0}
LOCK = threading.Lock()
# ``change_lists`` calls, for the ``subscriptions/listen`` streams open.
CHANGES = {"n": 0}
CHANGED = threading.Condition()
SERVER_ID = "mock"
ECHO_SESSION = False
# --strict-sessions: requests with a session id this process did not mint get 404.
STRICT_SESSIONS = False
MINTED = set()


LISTS = {
    "tools/list": ("tools", [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "stream", "status")]),
    "prompts/list": ("prompts", [{"name": "greet"}, {"name": "internal_audit"}]),
    "resources/list": ("resources", [{"uri": "mem://public/readme", "name": "readme"},
                                     {"uri": "mem://private/keys", "name": "keys"}]),
    "resources/templates/list": ("resourceTemplates", [{"uriTemplate": "mem://public/{name}", "name": "pub"},
                                                       {"uriTemplate": "mem://private/{name}", "name": "priv"}]),
}


def sse_frame(frame, obj, event_id="2"):
    """One SSE event carrying ``obj``, framed as asked: ``lf`` (default), ``crlf``, ``cr``
    (lone CR line ends), ``multiline`` (the JSON over several ``data:`` lines),
    ``surrogate`` (a lone-surrogate escape: JSON to a browser, not to strict parsers),
    ``nospace`` (``data:`` without the space)."""
    data = json.dumps(obj)
    if frame == "surrogate":
        data = data[:-1] + ', "x": "\\ud800"}'
    if frame == "multiline":
        lines = json.dumps(obj, indent=1).split("\n")
        return ("id: %s\nevent: message\n%s\n\n" % (event_id, "\n".join("data: " + l for l in lines))).encode()
    if frame == "nospace":
        return ("id: %s\nevent: message\ndata:%s\n\n" % (event_id, data)).encode()
    nl = {"crlf": "\r\n", "cr": "\r"}.get(frame, "\n")
    return ("id: %s%sevent: message%sdata: %s%s%s" % (event_id, nl, nl, data, nl, nl)).encode()


def bump(key, n=1):
    with LOCK:
        STATE[key] += n
        return STATE[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def describe(self, body):
        return {
            "server": SERVER_ID,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
            "version": self.request_version,
            # The gateway's side of this connection: tells reused connections apart.
            "client_port": self.client_address[1],
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }

    def send_json(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        extra = dict(extra or {})
        if ECHO_SESSION and self.headers.get("Mcp-Session-Id") and "Mcp-Session-Id" not in extra:
            extra["Mcp-Session-Id"] = self.headers["Mcp-Session-Id"]
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def wait_watching(self, seconds):
        """Stay silent up to ``seconds``; False as soon as the client closed the connection."""
        deadline = time.time() + seconds
        while True:
            left = deadline - time.time()
            if left <= 0:
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return False
                if not data:
                    return False
                # Unexpected bytes from the client: keep waiting without reading them.
                time.sleep(min(left, 0.05))

    def start_sse(self, content_type=None):
        self.send_response(200)
        self.send_header("Content-Type", content_type or "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_state":
            with LOCK:
                return self.send_json(200, dict(STATE, server=SERVER_ID))
        bump("requests")
        if "text/event-stream" not in self.headers.get("Accept", ""):
            return self.send_json(405, {"error": "GET needs Accept: text/event-stream"})
        query = parse_qs(url.query)
        last = self.headers.get("Last-Event-ID", "")
        if "list" in query or last.startswith("list"):
            # A resumed stream (or SSE polling) delivering a tools/list answer.
            frame = query.get("list", ["lf"])[0]
            self.start_sse(query.get("ct", [None])[0])
            result = self.describe(b"")
            result["tools"] = LISTS["tools/list"][1]
            if frame == "bom":
                self.chunk(b"\xef\xbb\xbf")
            self.chunk(sse_frame(frame, {"jsonrpc": "2.0", "id": 7, "result": result}))
            self.chunk(b"")
            return
        if "notify" in query:
            # A member's GET stream: a message (with what this GET carried), a
            # list_changed, a resource update, a request to the client; ids <id>-<n>.
            self.start_sse()
            events = [
                {"jsonrpc": "2.0", "method": "notifications/message",
                 "params": {"level": "info", "data": self.describe(b"")}},
                {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                 "params": {"uri": "mem://public/readme"}},
                {"jsonrpc": "2.0", "id": 0, "method": "roots/list",
                 "params": {"_meta": {"progressToken": 5}}},
            ]
            try:
                for n, event in enumerate(events, start=1):
                    self.chunk(b"id: %s-%d\nevent: message\ndata: %s\n\n" % (SERVER_ID.encode(), n, json.dumps(event).encode()))
                time.sleep(float(query.get("delay", ["30"])[0]))
                self.chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                bump("cancelled")
            return
        delay = float(query.get("delay", ["0.2"])[0])
        self.start_sse()
        info = self.describe(b"")
        try:
            self.chunk(b"event: ready\ndata: %s\n\n" % json.dumps(info).encode())
            time.sleep(delay)
            self.chunk(b"event: later\ndata: {}\n\n")
            self.chunk(b"")
            bump("completed_streams")
        except (BrokenPipeError, ConnectionResetError):
            bump("cancelled")

    def do_DELETE(self):
        bump("requests")
        bump("deletes")
        self.send_json(200, self.describe(b""))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        try:
            msg = json.loads(body)
        except ValueError:
            bump("requests")
            return self.send_json(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}})
        # A listen is a standing stream, not a request a test counts.
        if not (isinstance(msg, dict) and msg.get("method") == "subscriptions/listen"):
            bump("requests")
        if isinstance(msg, list):
            answers = []
            for m in msg:
                if "id" not in m:
                    continue
                result = self.describe(body)
                if m.get("method") in LISTS:
                    key, items = LISTS[m["method"]]
                    result[key] = items
                answers.append({"jsonrpc": "2.0", "id": m.get("id"), "result": result})
            return self.send_json(200, answers)
        if "method" not in msg and "id" in msg:
            with LOCK:
                STATE["last_response"] = msg
        if "method" in msg and "id" not in msg:
            with LOCK:
                STATE["last_notification"] = msg
        if "method" not in msg or "id" not in msg:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        method = msg["method"]
        params = msg.get("params") or {}
        sid = self.headers.get("Mcp-Session-Id")
        if STRICT_SESSIONS and sid and method != "initialize" and sid not in MINTED:
            return self.send_json(404, {"jsonrpc": "2.0", "id": msg.get("id"),
                                        "error": {"code": -32001, "message": "Session not found"}})
        if msg.get("id") == "mcp-gateway-health":
            # What the gateway's health check sent, for tests to look at.
            with LOCK:
                STATE["health_probe"] = {"method": method, "headers": {k.lower(): v for k, v in self.headers.items()}}
        result = self.describe(body)
        # The params as received (the name or URI a virtual server forwarded).
        result["params"] = params
        # A text result, as asked (``arguments.reply_text``).
        args = params.get("arguments") if isinstance(params, dict) else None
        if isinstance(args, dict) and "reply_text" in args:
            result["content"] = [{"type": "text", "text": args["reply_text"]}]
        if method == "vendor/tools":
            # A method of the server's own that answers with the tool list.
            method = "tools/list"
        if method in LISTS:
            key, items = LISTS[method]
            result[key] = items
            meta = params.get("_meta") or {}
            # A list that takes its time (concurrent requests overlap).
            time.sleep(float(meta.get("delay", 0)))
            if meta.get("sse"):
                frame = meta.get("frame", "lf")
                self.start_sse(meta.get("ct"))
                if frame == "bom":
                    self.chunk(b"\xef\xbb\xbf")
                progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": 1, "progress": 0}}
                self.chunk(b"event: message\ndata: %s\n\n" % json.dumps(progress).encode())
                final = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
                if frame == "lf":
                    self.chunk(b"id: 1\nevent: message\ndata: %s\n\n" % json.dumps(final).encode())
                else:
                    self.chunk(sse_frame(frame, final, "1"))
                time.sleep(float(meta.get("linger", 0)))
                self.chunk(b"")
                return
            if meta.get("gzip"):
                data = gzip.compress(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        if method == "subscriptions/listen":
            # A modern listen: the acknowledgment, then a list_changed for every
            # ``change_lists`` call, until the client goes away.
            self.start_sse()
            ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {}}
            seen = CHANGES["n"]
            try:
                self.chunk(b"event: message\ndata: %s\n\n" % json.dumps(ack).encode())
                bump("listeners")
                while True:
                    with CHANGED:
                        CHANGED.wait_for(lambda: CHANGES["n"] != seen, timeout=0.5)
                        now = CHANGES["n"]
                    if now != seen:
                        seen = now
                        change = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
                        self.chunk(b"event: message\ndata: %s\n\n" % json.dumps(change).encode())
                    else:
                        self.chunk(b": keep-alive\n\n")
            except (BrokenPipeError, ConnectionResetError):
                bump("listeners", -1)
            return
        if method == "tools/call" and params.get("name") == "change_lists":
            with CHANGED:
                CHANGES["n"] += 1
                CHANGED.notify_all()
        if method == "resources/read":
            # A modern server's cache fields, saying anyone may keep it for a minute.
            result.update({"contents": [{"uri": params.get("uri", ""), "text": "x"}],
                           "ttlMs": 60000, "cacheScope": "public"})
        if method == "initialize":
            n = bump("sessions")
            with LOCK:
                MINTED.add("%s-session-%d" % (SERVER_ID, n))
            # What an MCP server says of itself (besides the description).
            result.update({
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}, "prompts": {}, "resources": {"subscribe": True}},
                "serverInfo": {"name": SERVER_ID, "version": "1"},
                "instructions": "mock server %s" % SERVER_ID,
            })
            return self.send_json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result},
                                  {"Mcp-Session-Id": "%s-session-%d" % (SERVER_ID, n)})
        if method == "tools/call" and params.get("name") == "mint_session":
            n = bump("sessions")
            return self.send_json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result},
                                  {"Mcp-Session-Id": "%s-raw-%d" % (SERVER_ID, n)})
        if method == "tools/call" and params.get("name") == "switch":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(b"\x81\x05hello")
            self.wfile.flush()
            self.close_connection = True
            return
        if method == "tools/call" and params.get("name") == "hop":
            return self.send_json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result}, {
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "upstream-only",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic realm=upstream",
                "Proxy-Connection": "keep-alive",
                "Upgrade": "h2c",
                "X-Kept": "yes",
            })
        if method == "tools/call" and params.get("name") == "status":
            for early in params.get("arguments", {}).get("early", []):
                self.send_response_only(int(early))
                self.end_headers()
            code = int(params.get("arguments", {}).get("code", 500))
            return self.send_json(code, {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32603, "message": "as asked"}})
        if method == "tools/call" and params.get("name") == "slow":
            time.sleep(float(params.get("arguments", {}).get("delay", 30)))
            try:
                self.send_json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result})
            except (BrokenPipeError, ConnectionResetError):
                bump("cancelled")
            return
        if method == "tools/call" and params.get("name") == "stream":
            args = params.get("arguments", {})
            watch = args.get("watch") and args.get("idle")
            if watch and not self.wait_watching(float(args.get("head_delay", 0))):
                bump("cancelled")
                return
            self.start_sse()
            try:
                first = {"jsonrpc": "2.0", "method": "notifications/progress",
                         "params": {"progressToken": 1, "progress": 0, "server": SERVER_ID}}
                self.chunk(b"event: message\ndata: %s\n\n" % json.dumps(first).encode())
                deadline = time.time() + float(args.get("delay", 1))
                if watch and not self.wait_watching(float(args.get("delay", 1))):
                    bump("cancelled")
                    return
                while time.time() < deadline:
                    time.sleep(0.05)
                    if not args.get("idle"):
                        # A comment line: lets us notice a client that went away.
                        self.chunk(b": keep-alive\n\n")
                final = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
                self.chunk(b"event: message\ndata: %s\n\n" % json.dumps(final).encode())
                self.chunk(b"")
                bump("completed_streams")
            except (BrokenPipeError, ConnectionResetError):
                bump("cancelled")
            return
        self.send_json(200, {"jsonrpc": "2.0", "id": msg["id"], "result": result})


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)


def main():
    global SERVER_ID, ECHO_SESSION, STRICT_SESSIONS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--id", default="mock")
    p.add_argument("--unix")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--echo-session", action="store_true")
    p.add_argument("--strict-sessions", action="store_true")
    a = p.parse_args()
    SERVER_ID = a.id
    ECHO_SESSION = a.echo_session
    STRICT_SESSIONS = a.strict_sessions
    if a.unix:
        if os.path.exists(a.unix):
            os.unlink(a.unix)
        srv = UnixHTTPServer(a.unix, Handler)
        print("listening on %s" % a.unix, flush=True)
    else:
        ThreadingHTTPServer.daemon_threads = True
        # socketserver's default backlog (5) overflows when many clients connect at
        # once, and the kernel then resets connections a second later.
        ThreadingHTTPServer.request_queue_size = 128
        srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
        if a.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.tls[0], a.tls[1])
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
