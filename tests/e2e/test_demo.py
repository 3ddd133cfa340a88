"""The bundled rmcp demo server (demo/src/main.rs) behind the gateway."""

import json
import re
import subprocess

import httpx
from conftest import REPO
from helpers import JSON_HEADERS, jsonrpc_messages


def readme_curl() -> str:
    """The `curl` command of the README's quick start."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(curl .*?)\n```", readme, re.S)
    assert len(blocks) == 1, f"expected one curl block in README.md, found {len(blocks)}"
    return blocks[0]


def test_readme_curl_lists_demo_tools(stack):
    """The README's curl, run as written (only the port changed), lists the demo's tools."""
    gateway = stack.gateway({"default": {"servers": [stack.demo_server()]}})
    command = readme_curl()
    assert "http://127.0.0.1:8080/mcp" in command, command
    command = command.replace("http://127.0.0.1:8080", gateway)
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True)
    body = json.loads(out.stdout)
    assert body["id"] == 1, body
    assert {tool["name"] for tool in body["result"]["tools"]} == {"echo", "add", "countdown"}


def test_demo_tools_and_progress_stream(stack):
    gateway = stack.gateway({"default": {"servers": [stack.demo_server()]}})
    url = f"{gateway}/mcp"

    def call(id_, name, arguments, meta=None):
        params = {"name": name, "arguments": arguments}
        if meta:
            params["_meta"] = meta
        body = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}
        response = httpx.post(url, headers=JSON_HEADERS, json=body, timeout=30)
        assert response.status_code == 200, response.text
        return jsonrpc_messages(response)

    [add] = call(2, "add", {"a": 2, "b": 40})
    assert add["result"]["content"][0]["text"] == "42", add
    [echo] = call(3, "echo", {"text": "hi"})
    assert echo["result"]["content"][0]["text"] == "hi", echo

    *progress, final = call(4, "countdown", {"seconds": 2}, {"progressToken": "t"})
    assert [m["method"] for m in progress] == ["notifications/progress"] * 2, progress
    assert [m["params"]["progress"] for m in progress] == [1, 2]
    assert final["id"] == 4 and final["result"]["content"][0]["text"] == "done", final
