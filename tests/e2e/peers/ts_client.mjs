#!/usr/bin/env node
// The TypeScript SDK (v1) client against an MCP endpoint, over Streamable HTTP.
//
// Usage: node peers/ts_client.mjs URL [TOOL [JSON_ARGUMENTS]]
// Connects (initialize), lists tools (every page), calls TOOL (default: the first tool whose
// name ends in "echo", with {"text": "hello from typescript"}), closes the session, and
// prints one JSON object on stdout:
//   {"serverInfo": {...}, "protocolVersion": "...", "sessionId": "...",
//    "capabilities": {...}, "tools": ["..."], "call": {"tool": "...", "isError": false,
//    "text": "...", "content": [...]}, "terminated": true}
// Exits 1 with {"error": "..."} on stdout when anything fails.
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { exercise } from "./ts_session.mjs";

const [url, tool, argsJson] = process.argv.slice(2);
if (!url) {
  console.error("usage: ts_client.mjs URL [TOOL [JSON_ARGUMENTS]]");
  process.exit(2);
}

const transport = new StreamableHTTPClientTransport(new URL(url));
await exercise(
  transport,
  { tool, argsJson },
  {},
  (summary) => {
    summary.protocolVersion = transport.protocolVersion;
    summary.sessionId = transport.sessionId;
  },
  async (summary) => {
    await transport.terminateSession();
    summary.terminated = transport.sessionId === undefined;
  },
);
