#!/usr/bin/env python3
"""A scriptable MCP server on stdio (newline-delimited JSON-RPC), for the gateway's stdio
transport tests. Standard library only.

On start it writes its pid to ``$PEER_DIR/<pid>.pid`` (when ``PEER_DIR`` is set), and
``$PEER_DIR/<pid>.env`` (its environment, as JSON) and ``<pid>.cwd``.
``PEER_STUBBORN=1``: ignores SIGTERM and the end of stdin (only SIGKILL ends it).
``PEER_CRASH_ON_START=N``: exits with status N at once.
``PEER_MODERN=1``: a 2026-07-28 server: ``initialize`` is an unknown method (``-32601``),
``server/discover`` answers.

Methods: ``initialize`` (echoes the asked version, tools capability), ``ping``,
``tools/list`` (``echo``), ``tools/call``:

* ``echo``: the result's ``structuredContent`` holds the arguments and the id this process
  received (``seen_id``) and its pid;
* ``noise``: writes a line that is not JSON, a ``\\r\\n``-terminated log notification, a
  line over 2 KiB (for a small ``max_line``), 50 stderr lines, then answers;
* ``progress``: two ``notifications/progress`` with the request's token, then the answer;
* ``ask``: asks the client ``roots/list`` (id ``"srv-1"``) and answers with the client's reply;
* ``slow``: answers after ``arguments.seconds``; a ``notifications/cancelled`` for it is
  recorded instead (see ``state``);
* ``state``: what this process saw: cancellations, notifications;
* ``crash``: exits with status 1 without answering.
"""

import json
import os
import signal
import sys
import threading
import time

if os.environ.get("PEER_CRASH_ON_START"):
    sys.exit(int(os.environ["PEER_CRASH_ON_START"]))

STUBBORN = os.environ.get("PEER_STUBBORN") == "1"
MODERN = os.environ.get("PEER_MODERN") == "1"
if STUBBORN:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

PEER_DIR = os.environ.get("PEER_DIR")
if PEER_DIR:
    pid = os.getpid()
    with open(os.path.join(PEER_DIR, f"{pid}.env"), "w") as f:
        json.dump(dict(os.environ), f)
    with open(os.path.join(PEER_DIR, f"{pid}.cwd"), "w") as f:
        f.write(os.getcwd())
    with open(os.path.join(PEER_DIR, f"{pid}.pid"), "w") as f:
        f.write(str(pid))

LOCK = threading.Lock()
STATE = {"cancelled": [], "notifications": []}
WAITING = {}  # ids of the peer's own requests -> (event, [answer])
SLOW = {}  # ids of slow calls -> cancelled event


def write(msg, end=b"\n"):
    with LOCK:
        sys.stdout.buffer.write(json.dumps(msg).encode() + end)
        sys.stdout.buffer.flush()


def raw(data: bytes):
    with LOCK:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def result(msg, value):
    write({"jsonrpc": "2.0", "id": msg["id"], "result": value})


def tool_result(msg, structured):
    result(msg, {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured})


def call(msg):
    params = msg.get("params") or {}
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "echo":
        return tool_result(msg, {"arguments": args, "seen_id": msg["id"], "pid": os.getpid()})
    if name == "noise":
        raw(b"this is not JSON\n")
        raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "crlf"}}).encode() + b"\r\n")
        raw(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"' + b"x" * 4096 + b'"}}\n')
        for i in range(50):
            sys.stderr.write(f"stderr line {i}\n")
        sys.stderr.flush()
        return tool_result(msg, {"noise": "made"})
    if name == "progress":
        token = (params.get("_meta") or {}).get("progressToken")
        for step in (1, 2):
            write({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": token, "progress": step, "total": 2}})
        return tool_result(msg, {"token_seen": token})
    if name == "ask":
        event, box = threading.Event(), []
        WAITING["srv-1"] = (event, box)
        write({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})

        def answer():
            event.wait(30)
            tool_result(msg, {"client_answered": box[0] if box else None})

        threading.Thread(target=answer, daemon=True).start()
        return
    if name == "slow":
        cancelled = threading.Event()
        SLOW[json.dumps(msg["id"])] = cancelled

        def later():
            if not cancelled.wait(float(args.get("seconds", 5))):
                tool_result(msg, {"slow": "done"})

        threading.Thread(target=later, daemon=True).start()
        return
    if name == "state":
        with LOCK:
            snapshot = json.loads(json.dumps(STATE))
        return tool_result(msg, snapshot)
    if name == "crash":
        os._exit(1)
    write({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": f"unknown tool {name}"}})


def handle(msg):
    method = msg.get("method")
    if method is None:
        waiting = WAITING.pop(msg.get("id"), None)
        if waiting:
            waiting[1].append(msg.get("result"))
            waiting[0].set()
        return
    if "id" not in msg:
        with LOCK:
            STATE["notifications"].append(method)
        if method == "notifications/cancelled":
            rid = (msg.get("params") or {}).get("requestId")
            with LOCK:
                STATE["cancelled"].append(rid)
            ev = SLOW.pop(json.dumps(rid), None)
            if ev:
                ev.set()
        return
    if method == "initialize" and MODERN:
        return write({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no initialize in 2026-07-28"}})
    if method == "server/discover" and MODERN:
        return result(msg, {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                            "serverInfo": {"name": "stdio-peer", "version": "1"}})
    if method == "initialize":
        version = (msg.get("params") or {}).get("protocolVersion", "2025-11-25")
        return result(msg, {"protocolVersion": version, "capabilities": {"tools": {}},
                            "serverInfo": {"name": "stdio-peer", "version": "1"}})
    if method == "ping":
        return result(msg, {})
    if method == "tools/list":
        return result(msg, {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
    if method == "tools/call":
        return call(msg)
    write({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"no method {method}"}})


def main():
    for line in sys.stdin.buffer:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        handle(msg)
    while STUBBORN:
        time.sleep(1)


main()
