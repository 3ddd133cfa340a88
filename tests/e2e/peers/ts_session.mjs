// What the TypeScript SDK (v1) clients of peers/ts_client.mjs, peers/ts_ws_client.mjs and
// peers/ts_sse_client.mjs share: their command line, and one session's work once the
// transport is made.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";

// `[--header "Name: value"]... URL [TOOL [JSON_ARGUMENTS]]`: the headers as an object.
export function parseArgs(script) {
  const argv = process.argv.slice(2);
  const headers = {};
  while (argv[0] === "--header") {
    const [, header] = argv.splice(0, 2);
    const colon = header?.indexOf(":") ?? -1;
    if (colon < 1) usage(script);
    headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
  }
  const [url, tool, argsJson] = argv;
  if (!url) usage(script);
  return { headers, url, tool, argsJson };
}

function usage(script) {
  console.error(`usage: ${script} [--header "NAME: VALUE"]... URL [TOOL [JSON_ARGUMENTS]]`);
  process.exit(2);
}

// Connects `transport` (initialize), lists tools (every page), calls `tool` (default: the
// first tool whose name ends in "echo", with {"text": "hello from typescript"}), closes,
// and prints `summary` with what it saw as one JSON line; on any failure prints it with
// {"error": "..."} and exits 1. `describe(summary)` adds what the transport knows once
// connected; `beforeClose(summary)` runs last before the close (ending the session).
export async function exercise(
  transport,
  { tool: toolArg, argsJson },
  summary = {},
  describe = () => {},
  beforeClose = async () => {},
) {
  try {
    const client = new Client({ name: "ts-e2e-client", version: "1.0.0" });
    await client.connect(transport);
    summary.serverInfo = client.getServerVersion();
    summary.capabilities = client.getServerCapabilities();
    describe(summary);

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

    await beforeClose(summary);
    await client.close();
    console.log(JSON.stringify(summary));
  } catch (error) {
    console.log(JSON.stringify({ ...summary, error: String(error?.stack ?? error) }));
    process.exit(1);
  }
}
