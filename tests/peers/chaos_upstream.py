"""A misbehaving MCP upstream for the chaos tests: every POST is read (head and
Content-Length body), and its JSON-RPC `tools/call` argument `chaos` says how to answer
at the byte level:

* ``ok`` (or no ``chaos``): a correct JSON answer;
* ``reset_before_head``: the connection is reset (RST) before anything is sent;
* ``reset_after_head``: a head promising 200 bytes, then a reset;
* ``truncated``: a head promising 1000 bytes, 10 of them, then a close;
* ``not_http``: bytes that are not HTTP, then a close;
* ``drip``: a correct answer, one byte every ``arguments.interval`` seconds (0.2);
* ``hang_after_head``: the head of an SSE answer, then silence until the client goes;
* ``sse_no_newline``: an SSE answer of ``arguments.mib`` MiB (10) without a newline;
* ``close_mid_event``: an SSE answer cut in the middle of an event;
* ``cl_short``: ``Content-Length`` smaller than the body sent (the rest is garbage);
* ``cl_long``: ``Content-Length`` larger than the body sent, then a close;
* ``flap``: answers 503 with ``Connection: close`` every other call.

``SIGUSR1`` makes the server dead (its listener closed, every open connection reset)
or, when dead, alive again on the same port: a server that flaps between healthy and
dead, for the health checks to notice. ``/_state`` also lists ``calls``: how many times
each ``tools/call`` id arrived, across lives.

``GET /_state`` returns ``{"requests": {mode: count}, "calls": {id: count}}`` (what arrived, per mode: a
replayed request shows up twice). Flags: ``--port`` (0 = any). Prints
``listening on HOST:PORT`` when ready.
"""

import argparse
import json
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

LOCK = threading.Lock()
COUNTS = {}
CALLS = {}
FLAP = {"n": 0}
OPEN = set()  # the sockets of the connections being served


def answer_json(obj, status="200 OK", extra=b""):
    body = json.dumps(obj).encode()
    return (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (status.encode(), len(body), extra)) + body


class Handler(socketserver.BaseRequestHandler):
    def read_request(self, f):
        line = f.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin1").split(" ", 2)
        headers = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin1").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0") or 0))
        return method, path, headers, body

    def reset(self):
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()

    def handle(self):
        with LOCK:
            OPEN.add(self.request)
        try:
            self.serve()
        finally:
            with LOCK:
                OPEN.discard(self.request)

    def serve(self):
        f = self.request.makefile("rb")
        while True:
            req = self.read_request(f)
            if req is None:
                return
            method, path, headers, body = req
            if method == "GET" and path.startswith("/_state"):
                with LOCK:
                    self.request.sendall(answer_json({"requests": COUNTS, "calls": CALLS}))
                continue
            try:
                msg = json.loads(body or b"{}")
            except ValueError:
                msg = {}
            args = (msg.get("params") or {}).get("arguments") or {}
            mode = args.get("chaos", "ok") if isinstance(args, dict) else "ok"
            with LOCK:
                COUNTS[mode] = COUNTS.get(mode, 0) + 1
                if msg.get("method") == "tools/call" and "id" in msg:
                    key = json.dumps(msg["id"])
                    CALLS[key] = CALLS.get(key, 0) + 1
            result = {"jsonrpc": "2.0", "id": msg.get("id"),
                      "result": {"content": [{"type": "text", "text": "ok"}]}}
            s = self.request
            try:
                if mode == "ok":
                    s.sendall(answer_json(result))
                    continue
                if mode == "reset_before_head":
                    return self.reset()
                if mode == "reset_after_head":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
                    time.sleep(0.1)
                    return self.reset()
                if mode == "truncated":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"")
                    return
                if mode == "not_http":
                    s.sendall(b"SSH-2.0-OpenSSH_9.0\r\n\r\nnot http at all\r\n")
                    return
                if mode == "drip":
                    interval = float(args.get("interval", 0.2))
                    for b in answer_json(result):
                        s.sendall(bytes([b]))
                        time.sleep(interval)
                    continue
                if mode == "hang_after_head":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
                    while s.recv(1):
                        pass
                    return
                if mode == "sse_no_newline":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ")
                    chunk = b"x" * (1 << 16)
                    for _ in range(int(args.get("mib", 10)) * 16):
                        s.sendall(chunk)
                    return
                if mode == "close_mid_event":
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                              b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
                              b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":")
                    return
                if mode == "cl_short":
                    full = json.dumps(result).encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n" + full)
                    continue
                if mode == "cl_long":
                    full = json.dumps(result).encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (len(full) + 500) + full)
                    return
                if mode == "flap":
                    with LOCK:
                        FLAP["n"] += 1
                        down = FLAP["n"] % 2 == 1
                    if down:
                        s.sendall(answer_json({"error": "flapping"}, "503 Service Unavailable", b"Connection: close\r\n"))
                        return
                    s.sendall(answer_json(result))
                    continue
                s.sendall(answer_json(result))
            except (BrokenPipeError, ConnectionResetError, OSError):
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    srv = Server(("127.0.0.1", a.port), Handler)
    port = srv.server_address[1]
    print("listening on 127.0.0.1:%d" % port, flush=True)
    toggle = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: toggle.set())
    while True:
        serving = threading.Thread(target=srv.serve_forever, daemon=True)
        serving.start()
        toggle.wait()
        toggle.clear()
        # Dead: nothing listens, and what was open is reset.
        srv.shutdown()
        srv.server_close()
        with LOCK:
            for conn in list(OPEN):
                try:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        toggle.wait()
        toggle.clear()
        srv = Server(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    sys.exit(main())
