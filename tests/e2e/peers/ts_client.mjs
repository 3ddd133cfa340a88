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
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, toolArg, argsJson] = process.argv.slice(2);
if (!url) {
  console.error("usage: ts_client.mjs URL [TOOL [JSON_ARGUMENTS]]");
  process.exit(2);
}

const summary = {};
try {
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const client = new Client({ name: "ts-e2e-client", version: "1.0.0" });
  await client.connect(transport);
  summary.serverInfo = client.getServerVersion();
  summary.protocolVersion = transport.protocolVersion;
  summary.sessionId = transport.sessionId;
  summary.capabilities = client.getServerCapabilities();

  const tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  summary.tools = tools;

  const tool = toolArg ?? tools.find((name) => name.endsWith("echo"));
  if (tool) {
    const args = argsJson ? JSON.parse(argsJson) : { text: "hello from typescript" };
    const result = await client.callTool({ name: tool, arguments: args });
    summary.call = {
      tool,
      isError: Boolean(result.isError),
      text: result.content.filter((c) => c.type === "text").map((c) => c.text).join(""),
      content: result.content,
    };
  }

  await transport.terminateSession();
  summary.terminated = transport.sessionId === undefined;
  await client.close();
  console.log(JSON.stringify(summary));
} catch (error) {
  console.log(JSON.stringify({ ...summary, error: String(error?.stack ?? error) }));
  process.exit(1);
}
