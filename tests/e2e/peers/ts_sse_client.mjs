#!/usr/bin/env node
// The TypeScript SDK (v1) client against an MCP endpoint, over the legacy HTTP+SSE
// transport (2024-11-05, `SSEClientTransport`): GET URL opens the stream, whose `endpoint`
// event names where the messages are POSTed; the answers come back on the stream.
//
// Usage: node peers/ts_sse_client.mjs [--header "NAME: VALUE"]... URL [TOOL [JSON_ARGUMENTS]]
// URL is the stream's (`…/sse`). Connects (initialize), lists tools (every page), calls
// TOOL (default: the first tool whose name ends in "echo", with {"text": "hello from
// typescript"}), closes the stream, and prints one JSON object on stdout:
//   {"endpoint": "http://…/message?sessionId=…", "protocolVersion": "...",
//    "serverInfo": {...}, "capabilities": {...}, "tools": ["..."],
//    "call": {"tool": "...", "isError": false, "text": "...", "content": [...]}}
// (`endpoint`: the endpoint event's data, resolved against URL.)
// Exits 1 with {"error": "..."} on stdout when anything fails.
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { exercise, parseArgs } from "./ts_session.mjs";

const args = parseArgs("ts_sse_client.mjs");
// requestInit's headers go on the stream's GET and on the POSTs alike.
const transport = new SSEClientTransport(new URL(args.url), { requestInit: { headers: args.headers } });
await exercise(transport, args, {}, (s) => {
  s.endpoint = transport._endpoint?.href;
  s.protocolVersion = transport._protocolVersion;
});
