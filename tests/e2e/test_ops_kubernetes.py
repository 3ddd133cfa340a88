"""The Kubernetes manifests under k8s/ and the Helm chart k8s/helm/mcp-gateway.

Both are validated offline against the Kubernetes OpenAPI schemas bundled by
kubernetes-validate (strict: unknown fields are errors), for the oldest and the newest
Kubernetes version checked. The kustomization is assembled here (its resources plus the
ConfigMap its generator makes: kustomize itself is not run); the chart is rendered and
linted by Helm's own Go engine through helm-python-sdk (no `helm` binary here).
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmRenderError
from ops import REPO, VALID_SECRETS, assert_config_starts, assert_config_valid, drain_seconds, load_all_yaml, load_yaml, validate_config

K8S = REPO / "k8s"
CHART = K8S / "helm/mcp-gateway"
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
KINDS = {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
CHART_SECRETS = {"secrets": {"sessionKey": VALID_SECRETS["MCP_GATEWAY_SESSION_KEY"], "adminToken": VALID_SECRETS["MCP_GATEWAY_ADMIN_TOKEN"]}}


def kustomize() -> list[dict]:
    """The objects `kubectl apply -k k8s/` creates, without the generator's name hash."""
    k = load_yaml(K8S / "kustomization.yaml")
    assert k["kind"] == "Kustomization"
    objects = [doc for resource in k["resources"] for doc in load_all_yaml(K8S / resource)]
    for generator in k.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.partition("=")
            data[key] = (K8S / path).read_text()
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for image in k.get("images", []):
        for obj in objects:
            for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def helm_render(values: dict | None = None) -> list[dict]:
    rendered = Chart.load(CHART).render(values=values, name="mcp-gateway", namespace="mcp", is_install=True)
    return [doc for name, text in sorted(rendered.items()) if name.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds: dict[str, dict] = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


SOURCES = {"kustomize": kustomize, "helm": lambda: helm_render(CHART_SECRETS)}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(source, version):
    objects = SOURCES[source]()
    assert {o["kind"] for o in objects} == KINDS
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {e.path}: {e.message}")


def config_of(objects: list[dict], tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(by_kind(objects)["ConfigMap"]["data"]["gateway.yaml"])
    return path


@pytest.mark.parametrize("source", SOURCES)
def test_configmap_holds_a_valid_gateway_config(source, tmp_path):
    objects = SOURCES[source]()
    config = config_of(objects, tmp_path)
    env = {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}
    assert_config_valid(config, {**env, **VALID_SECRETS})
    # The admin service listens on the pod network: no token, no start.
    assert validate_config(config, env).returncode == 64


STARTS = {
    "kustomize": kustomize,
    "helm": lambda: helm_render(CHART_SECRETS),
    "helm-existing-secret": lambda: helm_render({"secrets": {"existingSecret": "gateway-secrets"}}),
}


@pytest.mark.parametrize("source", STARTS)
@pytest.mark.parametrize("session_key", [None, "", VALID_SECRETS["MCP_GATEWAY_SESSION_KEY"]])
def test_configmap_config_starts(source, session_key, tmp_path):
    """Not only valid: the rendered config starts, with the session key unset, empty
    (`${MCP_GATEWAY_SESSION_KEY:-}`: a generated key) or set."""
    objects = STARTS[source]()
    env = {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}
    env["MCP_GATEWAY_ADMIN_TOKEN"] = VALID_SECRETS["MCP_GATEWAY_ADMIN_TOKEN"]
    if session_key is not None:
        env["MCP_GATEWAY_SESSION_KEY"] = session_key
    assert_config_starts(config_of(objects, tmp_path), env, tmp_path)


def container(objects: list[dict]) -> dict:
    [c] = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("source", SOURCES)
def test_deployment_drains_before_it_stops(source, tmp_path):
    objects = SOURCES[source]()
    kinds = by_kind(objects)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    c = container(objects)
    config = yaml.safe_load(config_of(objects, tmp_path).read_text())
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": config["server"]["port"], "admin": config["admin"]["port"]}

    assert c["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/liveness", "port": "http"}
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 3, sleep
    # The kubelet kills at terminationGracePeriodSeconds, counted from the preStop hook.
    assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + drain_seconds(config)
    strategy = kinds["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("source", SOURCES)
def test_pods_run_unprivileged_on_a_read_only_root(source):
    objects = SOURCES[source]()
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The user of the image (docker/Dockerfile: USER 10001:10001).
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "USER 10001:10001" in (REPO / "docker/Dockerfile").read_text()
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The only writable place: /tmp, for the PID file and the upgrade socket.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/mcp-gateway"]["readOnly"] is True


@pytest.mark.parametrize("source", SOURCES)
def test_objects_refer_to_each_other(source):
    objects = SOURCES[source]()
    kinds = by_kind(objects)
    deployment = kinds["Deployment"]
    name = deployment["metadata"]["name"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] > kinds["PodDisruptionBudget"]["spec"]["minAvailable"]
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "http"

    pod = deployment["spec"]["template"]["spec"]
    [config_volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    secret = kinds["Secret"]
    for env in container(objects)["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref
    assert pod["containers"][0]["args"] == ["--config", "/etc/mcp-gateway/gateway.yaml"]


def test_kustomize_secret_holds_placeholders_the_gateway_refuses(tmp_path):
    objects = kustomize()
    secret = by_kind(objects)["Secret"]["stringData"]
    assert set(secret.values()) == {"REPLACE_ME"}, "k8s/secret.yaml must hold placeholders only"
    env = {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}
    out = validate_config(config_of(objects, tmp_path), {**env, "MCP_GATEWAY_SESSION_KEY": secret["session-key"], "MCP_GATEWAY_ADMIN_TOKEN": secret["admin-token"]})
    assert out.returncode == 64, "a gateway must not start with the placeholder secrets"
    assert "sessions.keys[0]" in out.stderr and "admin.token" in out.stderr, out.stderr


def strip(obj: dict) -> dict:
    """An object without what legitimately differs between the kustomize and the Helm
    output: names, labels, Helm's checksum annotation, the replica count the HPA owns."""
    obj = copy.deepcopy(obj)
    obj["metadata"] = {}
    spec = obj.get("spec", {})
    spec.pop("replicas", None)
    spec.pop("selector", None)
    if "template" in spec:
        spec["template"]["metadata"]["labels"] = {}
        spec["template"]["metadata"]["annotations"].pop("checksum/config", None)
        pod = spec["template"]["spec"]
        for v in pod["volumes"]:
            if "configMap" in v:
                v["configMap"]["name"] = "config"
        for e in pod["containers"][0]["env"]:
            if "valueFrom" in e:
                e["valueFrom"]["secretKeyRef"]["name"] = "secret"
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
    if obj["kind"] == "Secret":
        obj["stringData"] = sorted(obj["stringData"])
    if obj["kind"] in ("Service", "PodDisruptionBudget"):
        spec.pop("selector", None)
    if obj["kind"] == "HorizontalPodAutoscaler":
        spec["scaleTargetRef"].pop("name")
    return obj


def test_helm_chart_renders_what_kustomize_applies():
    helm = by_kind(helm_render(CHART_SECRETS))
    for kind, obj in by_kind(kustomize()).items():
        assert strip(helm[kind]) == strip(obj), f"{kind}: the chart and k8s/ disagree"


def test_helm_chart_needs_secrets_or_an_existing_secret():
    with pytest.raises(HelmRenderError, match="secrets.sessionKey"):
        helm_render()
    objects = helm_render({"secrets": {"existingSecret": "gateway-secrets"}})
    assert "Secret" not in {o["kind"] for o in objects}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container(objects)["env"] if "valueFrom" in e}
    assert refs == {"gateway-secrets"}


def test_helm_chart_rolls_pods_when_the_config_changes():
    def checksum(values):
        return by_kind(helm_render(values))["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    changed = copy.deepcopy(CHART_SECRETS)
    changed["config"] = {"logging": {"level": "debug"}}
    assert checksum(CHART_SECRETS) == checksum(copy.deepcopy(CHART_SECRETS))
    assert checksum(CHART_SECRETS) != checksum(changed)


def test_helm_chart_passes_helm_lint():
    result = lint(CHART, CHART_SECRETS, strict=True)
    assert result["total_charts_linted"] == 1 and not result["errors"], result
    # Severities: 1 info, 2 warning, 3 error.
    assert all(m["severity"] < 2 for m in result["messages"]), result["messages"]
