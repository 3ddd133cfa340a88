#!/usr/bin/env node
// The TypeScript SDK (v1) client against an MCP endpoint, over WebSocket
// (`WebSocketClientTransport`: subprotocol `mcp`, one JSON-RPC message per text frame).
//
// Usage: node peers/ts_ws_client.mjs [--header "NAME: VALUE"]... URL [TOOL [JSON_ARGUMENTS]]
// URL is ws:// or wss://. Connects (initialize), lists tools (every page), calls TOOL
// (default: the first tool whose name ends in "echo", with {"text": "hello from
// typescript"}), closes the socket, and prints one JSON object on stdout:
//   {"subprotocol": "mcp", "protocolVersion": "...", "serverInfo": {...},
//    "capabilities": {...}, "tools": ["..."], "call": {"tool": "...", "isError": false,
//    "text": "...", "content": [...]}}
// Exits 1 with {"error": "..."} on stdout when anything fails.
//
// The transport opens `new WebSocket(url, "mcp")`. Node 20 has no global WebSocket, so
// the pinned `ws` package is the global one here (on every Node version, so the client is
// the same everywhere); it also carries the --header values on the upgrade request.
import WebSocket from "ws";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { exercise, parseArgs } from "./ts_session.mjs";

const args = parseArgs("ts_ws_client.mjs");

globalThis.WebSocket = class extends WebSocket {
  constructor(url, protocols, options = {}) {
    super(url, protocols, { ...options, headers: { ...args.headers, ...options.headers } });
  }
};

const summary = {};
const transport = new WebSocketClientTransport(new URL(args.url));
// The transport keeps no protocol version of its own: record the one initialize agreed.
transport.setProtocolVersion = (version) => {
  summary.protocolVersion = version;
};
await exercise(transport, args, summary, (s) => {
  s.subprotocol = transport._socket?.protocol;
});
