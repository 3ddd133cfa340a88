"""The container files under docker/: the Dockerfile (hadolint, and its invariants read
with dockerfile-parse), docker-compose.yml (the compose-spec JSON schema vendored by
check-jsonschema, and every file and name it refers to), the gateway config it mounts,
and the Grafana provisioning. No Docker engine is needed."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from dockerfile_parse import DockerfileParser
from ops import REPO, VALID_SECRETS, assert_config_valid, drain_seconds, load_yaml, run, said, seconds, validate_config, venv_tool

DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
GATEWAY_CONFIG = DOCKER / "gateway.yaml"


def stages() -> dict[str, list[dict]]:
    """The Dockerfile's stages by name (`AS name`), each a list of its instructions."""
    parsed = DockerfileParser(str(DOCKERFILE))
    result: dict[str, list[dict]] = {}
    current: list[dict] | None = None
    for ins in parsed.structure:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {ins['value']}"
            current = result.setdefault(words[2], [])
        if current is not None:
            current.append(ins)
    return result


def instructions(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def compose() -> dict:
    return load_yaml(COMPOSE)


def test_dockerfile_passes_hadolint():
    out = run([venv_tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert out.returncode == 0, said(out)


def test_dockerfile_builds_small_non_root_images():
    all_stages = stages()
    names = list(all_stages)
    # Multi-stage: the toolchain stays in the build stages; the default target (the last
    # stage) is the gateway.
    assert names[-1] == "gateway", names
    assert {"build", "demo", "gateway"} <= set(all_stages), names
    gateway = all_stages["gateway"]
    assert instructions(gateway, "FROM")[0].startswith("runtime-base ")
    assert instructions(all_stages["runtime-base"], "FROM")[0].startswith("${RUNTIME_IMAGE} ")
    args = " ".join(i["value"] for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] == "ARG")
    assert "RUNTIME_IMAGE=debian:bookworm-slim" in args, args

    for name in ("gateway", "demo"):
        users = instructions(all_stages[name], "USER")
        assert users, f"stage {name} runs as root"
        uid = users[-1].split(":")[0]
        # Numeric, so Kubernetes' runAsNonRoot can check it.
        assert uid.isdigit() and int(uid) != 0, f"stage {name}: USER {users[-1]}"
        assert instructions(all_stages[name], "STOPSIGNAL"), f"stage {name} has no STOPSIGNAL"

    assert instructions(gateway, "STOPSIGNAL") == ["SIGTERM"]
    [health] = instructions(gateway, "HEALTHCHECK")
    assert "/liveness" in health and "${MCP_GATEWAY_PORT:-8080}" in health, health
    assert instructions(gateway, "ENTRYPOINT") == ['["/usr/local/bin/mcp-gateway"]']
    assert instructions(gateway, "CMD") == ['["--config", "/etc/mcp-gateway/gateway.yaml"]']
    assert "docker/gateway.yaml /etc/mcp-gateway/gateway.yaml" in instructions(gateway, "COPY")
    assert set(" ".join(instructions(gateway, "EXPOSE")).split()) == {"8080", "9090"}


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_dockerfile_copies_only_what_the_context_has():
    """Every COPY from the build context names a file of the repository that
    .dockerignore lets through (the context is the repository root)."""
    copied = 0
    for stage, body in stages().items():
        for value in instructions(body, "COPY"):
            words = value.split()
            if any(w.startswith("--from=") for w in words):
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), f"stage {stage}: COPY {source}: no such file"
                assert not dockerignored(source), f"stage {stage}: COPY {source} is excluded by .dockerignore"
                copied += 1
    assert copied >= 5
    for heavy in ("target", ".venv", ".git"):
        assert dockerignored(heavy), f".dockerignore lets {heavy} into the build context"


def test_compose_file_matches_the_compose_spec_schema():
    out = run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert out.returncode == 0, said(out)


def test_compose_services():
    services = compose()["services"]
    assert set(services) == {"mcp-gateway", "demo-1", "demo-2", "redis", "prometheus", "grafana"}

    names = set(stages())
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
            assert build["target"] in names, f"{name}: no stage {build['target']}"
        # Every file a service mounts is in the repository.
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), f"{name}: {volume} is not a repository file"
            assert (DOCKER / source).exists(), f"{name}: {source} does not exist"

    gateway = services["mcp-gateway"]
    assert gateway["build"]["target"] == "gateway"
    assert "./gateway.yaml:/etc/mcp-gateway/gateway.yaml:ro" in gateway["volumes"]
    assert seconds(gateway["stop_grace_period"]) > drain_seconds(load_yaml(GATEWAY_CONFIG))
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]
    assert "MCP_GATEWAY_ADMIN_TOKEN" in gateway["environment"]

    # The demo servers are the upstreams docker/gateway.yaml names, under those names.
    urls = {s["url"] for g in load_yaml(GATEWAY_CONFIG)["upstream"]["groups"].values() for s in g["servers"]}
    for demo in ("demo-1", "demo-2"):
        assert services[demo]["build"]["target"] == "demo"
        command = services[demo]["command"]
        assert command[command.index("--host") + 1] == demo, command
        assert f"http://{demo}:3001/mcp" in urls, urls


def test_compose_gateway_config_validates():
    assert_config_valid(GATEWAY_CONFIG, VALID_SECRETS)
    # Its admin service listens beyond loopback: without a token it must not start.
    out = validate_config(GATEWAY_CONFIG, {k: v for k, v in VALID_SECRETS.items() if k != "MCP_GATEWAY_ADMIN_TOKEN"})
    assert out.returncode == 64 and "MCP_GATEWAY_ADMIN_TOKEN" in out.stderr, out.stderr


def test_prometheus_scrapes_the_compose_gateway():
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    config_path = mounts["./prometheus/prometheus.yml"]
    assert f"--config.file={config_path}" in prometheus["command"]
    config = load_yaml(DOCKER / "prometheus/prometheus.yml")
    # Rule files are relative to the config file: they must be mounted beside it.
    for rule_file in config["rule_files"]:
        assert mounts[f"./prometheus/{rule_file}"] == str(Path(config_path).parent / rule_file)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "mcp-gateway"]
    admin = load_yaml(GATEWAY_CONFIG)["admin"]
    assert job["static_configs"][0]["targets"] == [f"mcp-gateway:{admin['port']}"]
    assert admin["host"] == "0.0.0.0"


def test_grafana_provisioning():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])

    datasources_dir = DOCKER / "grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    files = sorted(datasources_dir.glob("*.yml"))
    assert files, datasources_dir
    datasources = [d for f in files for d in load_yaml(f)["datasources"]]
    [prometheus] = datasources
    assert load_yaml(files[0])["apiVersion"] == 1
    assert prometheus["type"] == "prometheus" and prometheus["isDefault"] is True
    prometheus_port = compose()["services"]["prometheus"]["ports"][0].split(":")[-1]
    assert prometheus["url"] == f"http://prometheus:{prometheus_port}"

    dashboards_dir = DOCKER / "grafana/provisioning/dashboards"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    [provider_file] = sorted(dashboards_dir.glob("*.yml"))
    provider_doc = load_yaml(provider_file)
    assert provider_doc["apiVersion"] == 1
    [provider] = provider_doc["providers"]
    assert provider["type"] == "file"
    # The provider reads the directory where the repository's dashboards are mounted.
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((DOCKER / "grafana/dashboards/mcp-gateway.json").read_text())
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/mcp-gateway.json"
    # Provisioned from a file, the dashboard's data source comes from its
    # ${DS_PROMETHEUS} variable, which picks the default Prometheus data source.
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"


def test_every_file_under_docker_is_used():
    """Each file under docker/ reaches a container: mounted by the compose file (itself or
    its directory) or copied by the Dockerfile. A stray file is a file nobody checks."""
    used = [DOCKER / v.split(":")[0] for svc in compose()["services"].values() for v in svc.get("volumes", [])]
    used += [REPO / src for body in stages().values() for value in instructions(body, "COPY") if "--from=" not in value for src in value.split()[:-1]]
    for path in sorted(p for p in DOCKER.rglob("*") if p.is_file()):
        if path in (DOCKERFILE, COMPOSE):
            continue
        assert any(path == u or u in path.parents for u in used), f"{path.relative_to(REPO)} is used by no container"
