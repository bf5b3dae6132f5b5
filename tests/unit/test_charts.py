"""The Helm charts: the CRDs chart is a copy of crds/, and the operator chart renders what the operator needs.

The rendering tests run helm when there is one (``$AGENTFLOW_HELM``, ``helm`` on PATH, or the binary
``tests/e2e/tools/helm.sh`` builds) and are skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHARTS = ROOT / "charts"
CRDS_CHART = CHARTS / "agentflow-crds"
CHART = CHARTS / "agentflow"
HELM_SH = ROOT / "tests" / "e2e" / "tools" / "helm.sh"
RELEASE, NAMESPACE = "agentflow", "agentflow-system"
REQUIRED = ["--set", "postgres.existingSecret=agentflow-postgres"]
NAMESPACED_COPIES = ("KopfPeering", "Role", "RoleBinding")  # one per watched namespace: keyed NAME@NAMESPACE
GATEWAY = f"{RELEASE}-gateway"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- the CRDs chart is crds/


def test_crds_chart_holds_exactly_the_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in sorted(CRDS.glob("*.yaml"))}
    copied = {p.name: p.read_bytes() for p in sorted((CRDS_CHART / "crds").glob("*.yaml"))}
    assert generated, "crds/ is empty"
    drift = sorted(set(generated) ^ set(copied)) + sorted(n for n in generated.keys() & copied.keys()
                                                          if generated[n] != copied[n])
    assert not drift, (f"charts/agentflow-crds/crds/ differs from crds/ ({', '.join(drift)}): run `make crds`, "
                       "which regenerates crds/ and copies it into the chart")


def test_the_operator_chart_depends_on_the_crds_chart() -> None:
    chart, crds_chart = yaml.safe_load((CHART / "Chart.yaml").read_text()), yaml.safe_load(
        (CRDS_CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == crds_chart["apiVersion"] == "v2"
    assert chart["dependencies"] == [{"name": "agentflow-crds", "version": crds_chart["version"],
                                      "repository": "file://../agentflow-crds", "condition": "crds.enabled"}]


def test_kopf_peering_crds_are_installed_before_the_peering_object() -> None:
    crds = {d["spec"]["names"]["kind"]: d for d in load_all(CHART / "crds" / "kopf-peering.yaml")}
    assert set(crds) == {"ClusterKopfPeering", "KopfPeering"}
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        crd = crds[kind]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["spec"]["group"] == "kopf.dev" and crd["spec"]["scope"] == scope
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert not any("CustomResourceDefinition" in p.read_text() for p in (CHART / "templates").iterdir())


# -- rendering, with helm


def _helm() -> str | None:
    candidates = [os.environ.get("AGENTFLOW_HELM"), shutil.which("helm")]
    version = re.search(r'HELM_VERSION="\$\{HELM_VERSION:-([^}]+)\}"', HELM_SH.read_text())
    if version:
        cache = Path(os.environ.get("AGENTFLOW_CACHE", "/var/cache/agentflow"))
        candidates.append(str(cache / "bin" / f"helm-{version.group(1)}" / "helm"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The helm binary and a copy of the charts with the CRDs chart packaged as the dependency."""
    binary = _helm()
    if binary is None:
        pytest.skip("no helm binary: `bash tests/e2e/tools/helm.sh` builds one")
    charts = tmp_path_factory.mktemp("charts")
    for chart in (CRDS_CHART, CHART):
        shutil.copytree(chart, charts / chart.name, ignore=shutil.ignore_patterns("charts"))
    home = charts.parent / "helm-home"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    os.environ.update({k: env[k] for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
    try:
        run(binary, "dependency", "build", str(charts / "agentflow"))
        yield binary, charts
    finally:
        for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            os.environ.pop(key, None)


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if ok:
        assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def render(helm: tuple[str, Path], *options: str) -> dict[tuple[str, str], dict[str, Any]]:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), "--namespace", NAMESPACE, *REQUIRED,
              *options).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    by_key = {(d["kind"], d["metadata"]["name"] + (f"@{d['metadata']['namespace']}"
                                                  if d["kind"] in NAMESPACED_COPIES else "")): d for d in docs}
    assert len(by_key) == len(docs), "two objects of one kind share a name"
    return by_key


def test_helm_lint_passes(helm: tuple[str, Path]) -> None:
    binary, charts = helm
    run(binary, "lint", "--strict", str(charts / "agentflow-crds"))
    run(binary, "lint", "--strict", str(charts / "agentflow"), *REQUIRED)


def test_helm_template_renders(helm: tuple[str, Path]) -> None:
    objects = render(helm)
    assert {kind for kind, _ in objects} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "PodDisruptionBudget",
        "ClusterKopfPeering", "Secret"}

    deployment = objects[("Deployment", RELEASE)]
    assert deployment["metadata"]["namespace"] == NAMESPACE and deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["args"][:3] == ["operator", "--peering", "agentflow"]
    assert "--webhook-host=$(POD_IP)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["AGENTFLOW_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "agentflow-postgres", "key": "dsn"}
    assert env["AGENTFLOW_TOKEN_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "agentflow-token", "key": "key"}
    assert env["AGENTFLOW_CALLBACK_URL"]["value"] == f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:8081"
    assert env["AGENTFLOW_STEP_IMAGE"]["value"] == "localhost/agentflow-runtime:dev"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "callback"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp", "/var/run/agentflow/webhook"}

    service = objects[("Service", RELEASE)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"callback": 8081, "webhook": 9443,
                                                                       "metrics": 9090}
    selector = service["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert objects[("PodDisruptionBudget", RELEASE)]["spec"]["minAvailable"] == 1
    assert objects[("ServiceAccount", RELEASE)]["metadata"]["namespace"] == NAMESPACE
    binding = objects[("ClusterRoleBinding", RELEASE)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert ("ClusterKopfPeering", "agentflow") in objects


def _rules(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    grants: dict[tuple[str, str, str], set[str]] = {}
    for rule in objects[("ClusterRole", RELEASE)]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames", ["*"]):
                    grants.setdefault((group, resource, name), set()).update(rule["verbs"])
    return grants


def test_rbac_is_least_privilege(helm: tuple[str, Path]) -> None:
    grants = _rules(render(helm))
    kinds = ["workflows", "agents", "promptversions", "budgets", "toolpolicies"]
    webhooks = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    expected = {
        **{("agentflow.dev", k, "*"): {"get", "list", "watch", "patch"} for k in kinds},
        **{("agentflow.dev", f"{k}/status", "*"): {"get", "patch", "update"} for k in kinds},
        ("", "pods", "*"): {"get", "list", "watch", "create", "delete"},
        ("networking.k8s.io", "networkpolicies", "*"): {"get", "create", "delete"},
        ("", "events", "*"): {"create", "patch"},
        ("events.k8s.io", "events", "*"): {"create", "patch"},
        **{("admissionregistration.k8s.io", w, "*"): {"create"} for w in webhooks},
        **{("admissionregistration.k8s.io", w, "agentflow.dev"): {"get", "patch"} for w in webhooks},
        ("kopf.dev", "clusterkopfpeerings", "*"): {"get", "list", "watch", "patch"},
        ("kopf.dev", "kopfpeerings", "*"): {"get", "list", "watch", "patch"},
        ("", "namespaces", "*"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions", "*"): {"list", "watch"},
    }
    assert grants == expected
    without_webhook = _rules(render(helm, "--set", "webhook.enabled=false"))
    assert without_webhook == {k: v for k, v in expected.items() if k[0] != "admissionregistration.k8s.io"}


def test_values_change_the_rendering(helm: tuple[str, Path]) -> None:
    objects = render(helm, "--set", "replicaCount=1", "--set", "webhook.enabled=false",
                     "--set", "watchNamespaces={team-a,team-b}", "--set", "steps.env.AGENTFLOW_MODEL_MODE=offline",
                     "--set", "tokenKey.existingSecret=mine")
    assert ("PodDisruptionBudget", RELEASE) not in objects and ("Secret", "agentflow-token") not in objects
    assert {key for key in objects if key[0].endswith("KopfPeering")} == {
        ("KopfPeering", "agentflow@team-a"), ("KopfPeering", "agentflow@team-b")}
    (container,) = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--webhook") for a in container["args"])
    assert {"--namespace=team-a", "--namespace=team-b", "--step-env=AGENTFLOW_MODEL_MODE=offline"} <= set(
        container["args"])
    assert {p["name"] for p in container["ports"]} == {"callback", "metrics"}
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENTFLOW_TOKEN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_crds_render_with_the_chart_and_the_dsn_is_required(helm: tuple[str, Path]) -> None:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED, "--include-crds").stdout
    crds = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d and d["kind"] == "CustomResourceDefinition"}
    assert crds == {p.name.removesuffix(".yaml") for p in CRDS.glob("*.yaml")} | {
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    missing = run(binary, "template", RELEASE, str(charts / "agentflow"), ok=False)
    assert missing.returncode != 0 and "postgres.existingSecret" in missing.stderr
    with_dsn = render(helm, "--set", "postgres.existingSecret=", "--set", "postgres.dsn=postgresql://u:p@db/af")
    assert ("Secret", "agentflow-postgres") in with_dsn


def test_callback_url_and_peering_identity(helm: tuple[str, Path]) -> None:
    def env(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        (container,) = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e for e in container["env"]}

    default = env(render(helm))
    assert default["AGENTFLOW_CALLBACK_URL"]["value"] == f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:8081"
    # kopf names peers by POD_ID: the peering's status lists the replicas by pod name.
    assert default["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # A cluster without DNS for pods: the replica's own address, $(POD_IP) expanded by the kubelet, which
    # needs POD_IP defined before it.
    custom = env(render(helm, "--set-string", "callback.url=http://$(POD_IP):8081"))
    assert custom["AGENTFLOW_CALLBACK_URL"]["value"] == "http://$(POD_IP):8081"
    order = list(custom)
    assert order.index("POD_IP") < order.index("AGENTFLOW_CALLBACK_URL")


# -- the gateway


def _container(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_gateway_is_off_by_default(helm: tuple[str, Path]) -> None:
    objects = render(helm)
    assert not [key for key in objects if "gateway" in key[1]]
    assert not any(a.startswith("--gateway") for a in _container(objects, RELEASE)["args"])


def test_the_gateway_deployment_service_and_the_url_step_pods_get(helm: tuple[str, Path]) -> None:
    from agentflow.commands.gateway import build_parser as gateway_parser
    from agentflow.controller.main import build_parser as operator_parser

    objects = render(helm, "--set", "gateway.enabled=true")
    deployment = objects[("Deployment", GATEWAY)]
    assert deployment["metadata"]["namespace"] == NAMESPACE and deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == GATEWAY and pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = _container(objects, GATEWAY)
    assert container["image"] == _container(objects, RELEASE)["image"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    args = container["args"]
    assert args[0] == "gateway"
    parsed = gateway_parser().parse_args(args[1:])  # every flag the chart passes exists, with a valid value
    assert parsed.listen == "0.0.0.0:8082" and parsed.token_key_file == "/etc/agentflow/token-key/key"
    assert parsed.upstream == "litellm" and parsed.cache_ttl == 300 and parsed.cache_size == 10000
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENTFLOW_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "agentflow-postgres", "key": "dsn"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["token-key"]["secret"]["secretName"] == "agentflow-token"
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/tmp": False, "/etc/agentflow/token-key": True}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "gateway"}

    # The gateway's Service selects its pods and not the operator's, and the operator's selects none of its.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    operator_labels = objects[("Deployment", RELEASE)]["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", GATEWAY)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"gateway": 8082}
    assert service["spec"]["selector"].items() <= labels.items()
    assert not service["spec"]["selector"].items() <= operator_labels.items()
    assert not objects[("Service", RELEASE)]["spec"]["selector"].items() <= labels.items()
    assert not objects[("Deployment", RELEASE)]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "gateway"
    assert objects[("PodDisruptionBudget", GATEWAY)]["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]

    # The operator gives step pods the Service's URL (its --gateway-url flag).
    operator_args = _container(objects, RELEASE)["args"]
    url = f"http://{GATEWAY}.{NAMESPACE}.svc.cluster.local:8082"
    assert f"--gateway-url={url}" in operator_args
    assert operator_parser().parse_args(operator_args[1:]).gateway_url == url


def test_gateway_values(helm: tuple[str, Path]) -> None:
    objects = render(helm, "--set", "gateway.enabled=true", "--set", "gateway.replicaCount=3",
                     "--set", "gateway.port=9000", "--set-string", "gateway.url=http://10.96.0.82:9000",
                     "--set-string", "gateway.service.clusterIP=10.96.0.82", "--set", "gateway.upstream=offline",
                     "--set", "gateway.cache.ttlSeconds=0", "--set", "gateway.extraArgs={--cooldown-after=5}")
    assert objects[("Deployment", GATEWAY)]["spec"]["replicas"] == 3
    args = _container(objects, GATEWAY)["args"]
    assert {"--listen=0.0.0.0:9000", "--upstream=offline", "--cache-ttl=0", "--cooldown-after=5"} <= set(args)
    service = objects[("Service", GATEWAY)]
    assert service["spec"]["clusterIP"] == "10.96.0.82" and service["spec"]["ports"][0]["port"] == 9000
    assert "--gateway-url=http://10.96.0.82:9000" in _container(objects, RELEASE)["args"]
    single = render(helm, "--set", "gateway.enabled=true", "--set", "gateway.replicaCount=1")
    assert ("PodDisruptionBudget", GATEWAY) not in single and ("PodDisruptionBudget", RELEASE) in single


def _gateway_rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


GATEWAY_GRANTS = {("agentflow.dev", "budgets"): {"get", "list"}, ("agentflow.dev", "agents"): {"get", "list"},
                  ("", "secrets"): {"get"}}


def test_gateway_rbac_reads_budgets_agents_and_secrets_only(helm: tuple[str, Path]) -> None:
    subject = [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]
    cluster_wide = render(helm, "--set", "gateway.enabled=true")
    assert _gateway_rules(cluster_wide[("ClusterRole", GATEWAY)]) == GATEWAY_GRANTS
    binding = cluster_wide[("ClusterRoleBinding", GATEWAY)]
    assert binding["roleRef"]["name"] == GATEWAY and binding["subjects"] == subject
    # The operator's own role still has no Secrets.
    assert not any("secrets" in r["resources"] for r in cluster_wide[("ClusterRole", RELEASE)]["rules"])

    # Watching namespaces: Secrets only there, through a Role in each; nothing cluster-wide.
    scoped = render(helm, "--set", "gateway.enabled=true", "--set", "watchNamespaces={team-a,team-b}")
    assert ("ClusterRole", GATEWAY) not in scoped and ("ClusterRoleBinding", GATEWAY) not in scoped
    for ns in ("team-a", "team-b"):
        role, binding = scoped[("Role", f"{GATEWAY}@{ns}")], scoped[("RoleBinding", f"{GATEWAY}@{ns}")]
        assert _gateway_rules(role) == GATEWAY_GRANTS
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY}
        assert binding["subjects"] == subject
    assert {k for k in scoped if k[0] in ("Role", "RoleBinding")} == {
        (kind, f"{GATEWAY}@{ns}") for kind in ("Role", "RoleBinding") for ns in ("team-a", "team-b")}
    without_rbac = render(helm, "--set", "gateway.enabled=true", "--set", "rbac.create=false")
    assert not [k for k in without_rbac if k[0] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
