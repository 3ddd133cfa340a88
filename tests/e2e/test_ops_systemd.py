"""The systemd unit (scripts/systemd/mcp-gateway.service), its config (conf/systemd.yaml)
and scripts/install.sh: `systemd-analyze verify` and `security --offline`, shellcheck,
and an install into a staging root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ops import (
    GATEWAY_BIN,
    REPO,
    VALID_SECRETS,
    assert_config_valid,
    drain_seconds,
    load_yaml,
    run,
    said,
    seconds,
    system_tool,
)

UNIT = REPO / "scripts/systemd/mcp-gateway.service"
INSTALL = REPO / "scripts/install.sh"
CONFIG = REPO / "conf/systemd.yaml"
BIN = "/usr/local/bin/mcp-gateway"


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` → every value it is given (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values and len(values) == 1, f"{UNIT.name}: {key} is set {values!r}, expected once"
    return values[0]


def unit_with_binary(tmp_path: Path) -> Path:
    """The unit with its commands pointing at the built binary (systemd-analyze checks
    that they exist)."""
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(BIN, str(GATEWAY_BIN)))
    return copy


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = system_tool("systemd-analyze", "systemd")
    out = run([analyze, "verify", "--man=no", str(unit_with_binary(tmp_path))])
    # Unknown keys and bad values are warnings with exit status 0: any output fails.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), said(out)


def test_unit_exposure_stays_low(tmp_path):
    """`systemd-analyze security` rates the sandbox 0 (tight) to 10 (none): stay ≤ 2.0."""
    analyze = system_tool("systemd-analyze", "systemd")
    out = run([analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit_with_binary(tmp_path))])
    assert out.returncode == 0, said(out)


def test_unit_matches_the_config_it_runs():
    """PID file, upgrade socket and stop timeout agree with conf/systemd.yaml, which
    install.sh installs as /etc/mcp-gateway/gateway.yaml."""
    s = unit_settings(UNIT.read_text())
    config = load_yaml(CONFIG)
    conf_path = "/etc/mcp-gateway/gateway.yaml"

    assert one(s, "Service.Type") == "forking"
    assert one(s, "Service.ExecStart") == f"{BIN} --daemon --config {conf_path}"
    assert one(s, "Service.ExecStartPre") == f"{BIN} --validate --config {conf_path}"
    assert one(s, "Service.ExecReload") == f"{BIN} upgrade --config {conf_path}"
    assert one(s, "Service.User") == one(s, "Service.Group") == "mcp-gateway"
    assert one(s, "Service.EnvironmentFile") == "-/etc/mcp-gateway/env"

    # systemd reads the PID file to follow the main process across an upgrade: the
    # gateway must write it where systemd looks, in the runtime directory it creates.
    runtime = "/run/" + one(s, "Service.RuntimeDirectory")
    assert one(s, "Service.PIDFile") == config["server"]["pid_file"]
    assert str(Path(config["server"]["pid_file"]).parent) == runtime
    assert str(Path(config["server"]["upgrade_sock"]).parent) == runtime

    stop = seconds(one(s, "Service.TimeoutStopSec"))
    assert stop > drain_seconds(config), f"TimeoutStopSec={stop}s cuts the drain ({drain_seconds(config)}s)"
    assert one(s, "Service.KillSignal") == "SIGTERM"


@pytest.mark.parametrize(
    "key, value",
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("LimitNOFILE", "524288"),
        ("MemoryDenyWriteExecute", "yes"),
    ],
)
def test_unit_hardening(key, value):
    assert one(unit_settings(UNIT.read_text()), f"Service.{key}") == value


def test_unit_filters_system_calls():
    filters = unit_settings(UNIT.read_text())["Service.SystemCallFilter"]
    assert filters[0] == "@system-service", filters


def test_example_config_validates():
    assert_config_valid(CONFIG)
    assert_config_valid(CONFIG, VALID_SECRETS)


def test_scripts_pass_shellcheck():
    shellcheck = system_tool("shellcheck", "shellcheck")
    scripts = [INSTALL, *(REPO / "scripts" / n for n in ("test", "deps.sh", "run", "bench"))]
    out = run([shellcheck, "--external-sources", *map(str, scripts)], cwd=REPO)
    assert out.returncode == 0, said(out)


def install(root: Path, *args: str, binary: Path = GATEWAY_BIN):
    out = run(["bash", str(INSTALL), "--bin", str(binary), "--root", str(root), *args], cwd="/")
    assert out.returncode == 0, said(out)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_staging_root(tmp_path):
    root = tmp_path / "root"
    install(root)
    binary = root / "usr/local/bin/mcp-gateway"
    assert binary.read_bytes() == GATEWAY_BIN.read_bytes() and mode(binary) == 0o755
    unit = root / "etc/systemd/system/mcp-gateway.service"
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    assert (root / "usr/local/share/doc/mcp-gateway/operations.md").read_text() == (REPO / "docs/operations.md").read_text()
    etc = root / "etc/mcp-gateway"
    assert mode(etc) == 0o750
    assert (etc / "gateway.yaml").read_text() == CONFIG.read_text() and mode(etc / "gateway.yaml") == 0o640
    assert mode(etc / "env") == 0o640

    # The env file holds a fresh, well-formed session key and admin token, with which
    # the installed config validates.
    env = dict(line.split("=", 1) for line in (etc / "env").read_text().splitlines() if line and not line.startswith("#"))
    assert set(env) == {"MCP_GATEWAY_SESSION_KEY", "MCP_GATEWAY_ADMIN_TOKEN"}, env
    assert_config_valid(etc / "gateway.yaml", env)
    bad_key = {**env, "MCP_GATEWAY_SESSION_KEY": "too-short"}
    out = run([str(binary), "--validate", "--config", str(etc / "gateway.yaml")], env={"PATH": "/usr/bin:/bin", **bad_key})
    assert out.returncode == 64, "the test's bad key should not validate"

    # Rerun: the operator's config and secrets are kept, an unchanged binary is left be.
    (etc / "gateway.yaml").write_text(CONFIG.read_text().replace("level: info", "level: debug"))
    secrets = (etc / "env").read_text()
    out = install(root)
    assert "up to date" in out.stderr, out.stderr
    assert "level: debug" in (etc / "gateway.yaml").read_text()
    assert (etc / "env").read_text() == secrets
    assert not (root / "usr/local/bin/mcp-gateway.previous").exists()

    # A new binary: the one it replaces is kept for a rollback.
    newer = tmp_path / "mcp-gateway"
    newer.write_bytes(GATEWAY_BIN.read_bytes() + b"\0")
    newer.chmod(0o755)
    install(root, binary=newer)
    assert binary.read_bytes() == newer.read_bytes()
    assert (root / "usr/local/bin/mcp-gateway.previous").read_bytes() == GATEWAY_BIN.read_bytes()


def test_install_with_another_prefix(tmp_path):
    root = tmp_path / "root"
    install(root, "--prefix", "/opt/mcp-gateway")
    assert (root / "opt/mcp-gateway/bin/mcp-gateway").exists()
    s = unit_settings((root / "etc/systemd/system/mcp-gateway.service").read_text())
    assert one(s, "Service.ExecStart").startswith("/opt/mcp-gateway/bin/mcp-gateway ")
    assert "file:/opt/mcp-gateway/share/doc/mcp-gateway/operations.md" in s["Unit.Documentation"]
    assert not any(BIN in v for values in s.values() for v in values)


def test_install_refuses_a_missing_binary(tmp_path):
    out = run(["bash", str(INSTALL), "--bin", str(tmp_path / "nope"), "--root", str(tmp_path / "root")])
    assert out.returncode == 1 and "no binary" in out.stderr, said(out)
    assert not (tmp_path / "root").exists()


def test_install_into_slash_needs_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: an install into / would change this machine")
    out = run(["bash", str(INSTALL), "--bin", str(GATEWAY_BIN)], env={"PATH": os.environ["PATH"]})
    assert out.returncode == 1 and "needs root" in out.stderr, said(out)
