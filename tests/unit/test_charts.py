"""The Helm charts: the CRDs chart is a copy of crds/, and the operator chart renders what the operator needs.

The rendering tests run helm when there is one (``$AGENTFLOW_HELM``, ``helm`` on PATH, or the binary
``tests/e2e/tools/helm.sh`` builds: ``make tools``, which ``make test`` and CI run first) and are skipped
otherwise; in CI (``CI`` set) a missing helm fails them instead. They render a copy of ``charts/`` as a fresh
clone has it (links kept, no ``helm dependency build``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHARTS = ROOT / "charts"
CHART = CHARTS / "agentflow"
CRDS_CHART = CHART / "charts" / "agentflow-crds"  # the subchart, committed; charts/agentflow-crds links to it
HELM_SH = ROOT / "tests" / "e2e" / "tools" / "helm.sh"
RELEASE, NAMESPACE = "agentflow", "agentflow-system"
REQUIRED = ["--set", "postgres.existingSecret=agentflow-postgres"]
NAMESPACED_COPIES = ("KopfPeering", "Role", "RoleBinding")  # one per watched namespace: keyed NAME@NAMESPACE
GATEWAY = f"{RELEASE}-gateway"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


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
    # The subchart is a folder of the chart (helm needs no `dependency build`), and charts/agentflow-crds, where
    # the docs send people to install the CRDs alone, is the same folder.
    assert CRDS_CHART.is_dir() and not CRDS_CHART.is_symlink()
    link = CHARTS / "agentflow-crds"
    assert link.is_symlink() and link.resolve() == CRDS_CHART.resolve()
    assert os.readlink(link) == "agentflow/charts/agentflow-crds", "a relative link, valid in any clone"


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
    """The helm binary and a copy of charts/ as a clone has it (links kept; no `helm dependency build`)."""
    binary = _helm()
    if binary is None:
        message = "no helm binary: `bash tests/e2e/tools/helm.sh` (or `make tools`) builds one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    charts = tmp_path_factory.mktemp("clone") / "charts"
    shutil.copytree(CHARTS, charts, symlinks=True, ignore=shutil.ignore_patterns("*.tgz"))
    home = charts.parent / "helm-home"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    os.environ.update({k: env[k] for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
    try:
        yield binary, charts
    finally:
        for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            os.environ.pop(key, None)


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if ok:
        assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def render(helm: tuple[str, Path], *options: str, required: Sequence[str] = REQUIRED
           ) -> dict[tuple[str, str], dict[str, Any]]:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), "--namespace", NAMESPACE, *required,
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
        "Role", "RoleBinding", "Secret", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}

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
    # Two replicas share the work (--shards auto): a Lease each in the release's namespace, named by pod.
    assert container["args"][:7] == ["operator", "--shards=auto", "--replica-id=$(POD_NAME)",
                                     "--shard-namespace=$(POD_NAMESPACE)", f"--shard-group={RELEASE}",
                                     "--shard-lease-seconds=10", "--shard-renew-seconds=2"]
    assert "--peering" not in container["args"]
    assert "--webhook-host=$(POD_IP)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["AGENTFLOW_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "agentflow-postgres", "key": "dsn"}
    assert not [name for name in env if "TOKEN" in name], "no token key: step pods have projected tokens"
    assert env["AGENTFLOW_CALLBACK_URL"]["value"] == "http://$(POD_IP):8081"
    assert env["AGENTFLOW_STEP_IMAGE"]["value"] == f"localhost/agentflow-runtime:{APP_VERSION}"
    assert container["image"] == f"localhost/agentflow-operator:{APP_VERSION}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "callback"}
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    assert mounts == {"/tmp": False, "/var/run/agentflow/webhook": False, "/etc/agentflow/signing": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["signing-key"]["secret"] == {"secretName": "agentflow-signing", "defaultMode": 0o440,
                                                "items": [{"key": "key", "path": "key"}]}
    parsed = _operator_args(container)
    assert parsed.signing_key_file == "/etc/agentflow/signing/key"
    assert parsed.status_previews == "masked" and parsed.egress_deny == [] and parsed.gateway_pods is None
    assert parsed.webhook_check_secrets is False and parsed.model_endpoints is None

    service = objects[("Service", RELEASE)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"callback": 8081, "webhook": 9443,
                                                                       "metrics": 9090}
    selector = service["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert objects[("PodDisruptionBudget", RELEASE)]["spec"]["minAvailable"] == 1
    assert objects[("ServiceAccount", RELEASE)]["metadata"]["namespace"] == NAMESPACE
    binding = objects[("ClusterRoleBinding", RELEASE)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert not [key for key in objects if "KopfPeering" in key[0]]
    leases = _rules(objects, ("Role", f"{RELEASE}-shards@{NAMESPACE}"))
    assert leases == {("coordination.k8s.io", "leases", "*"): {"get", "list", "create", "patch", "delete"}}
    assert objects[("Role", f"{RELEASE}-shards@{NAMESPACE}")]["metadata"]["namespace"] == NAMESPACE
    assert objects[("RoleBinding", f"{RELEASE}-shards@{NAMESPACE}")]["subjects"] == binding["subjects"]
    parsed = _operator_args(container)
    assert (parsed.shards, parsed.shard_lease_seconds, parsed.shard_renew_seconds) == ("auto", 10, 2.0)


def test_one_replica_or_sharding_off_is_kopf_peering(helm: tuple[str, Path]) -> None:
    for option in ("replicaCount=1", "sharding.enabled=false"):
        objects = render(helm, "--set", option)
        (container,) = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
        assert container["args"][:3] == ["operator", "--peering", "agentflow"], option
        assert not [a for a in container["args"] if a.startswith("--shard")], option
        assert ("ClusterKopfPeering", "agentflow") in objects
        assert ("Role", f"{RELEASE}-shards@{NAMESPACE}") not in objects
        assert ("kopf.dev", "clusterkopfpeerings", "*") in _rules(objects)
    objects = render(helm, "--set", "sharding.leaseDurationSeconds=20", "--set", "sharding.renewSeconds=4")
    (container,) = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
    parsed = _operator_args(container)
    assert (parsed.shard_lease_seconds, parsed.shard_renew_seconds) == (20, 4.0)


def _rules(objects: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str] = ("ClusterRole", RELEASE)
           ) -> dict[tuple[str, str, str], set[str]]:
    grants: dict[tuple[str, str, str], set[str]] = {}
    for rule in objects[key]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames", ["*"]):
                    grants.setdefault((group, resource, name), set()).update(rule["verbs"])
    return grants


def test_rbac_is_least_privilege(helm: tuple[str, Path]) -> None:
    grants = _rules(render(helm))
    kinds = ["workflows", "agents", "promptversions", "budgets", "toolpolicies", "workflowtemplates",
             "workflowschedules", "workflowtriggers", "promptrollouts"]
    webhooks = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    expected = {
        **{("agentflow.dev", k, "*"): {"get", "list", "watch", "patch"} for k in kinds},
        **{("agentflow.dev", f"{k}/status", "*"): {"get", "patch", "update"} for k in kinds},
        ("agentflow.dev", "workflows", "*"): {"get", "list", "watch", "patch", "create", "delete"},  # schedules
        # evaluations: the built-in judge prompts
        ("agentflow.dev", "promptversions", "*"): {"get", "list", "watch", "patch", "create"},
        ("", "pods", "*"): {"get", "list", "watch", "create", "delete"},
        ("networking.k8s.io", "networkpolicies", "*"): {"get", "list", "watch", "create", "update", "delete"},
        ("", "events", "*"): {"create", "patch"},
        ("events.k8s.io", "events", "*"): {"create", "patch"},
        **{("admissionregistration.k8s.io", w, "*"): {"create"} for w in webhooks},
        **{("admissionregistration.k8s.io", w, "agentflow.dev"): {"get", "patch"} for w in webhooks},
        ("", "namespaces", "*"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions", "*"): {"list", "watch"},
        # The callback server checks step pods' projected tokens (then gets the pod: above).
        ("authentication.k8s.io", "tokenreviews", "*"): {"create"},
        # The approval webhook asks RBAC whether the requesting user may approve (workflows/approval).
        ("authorization.k8s.io", "subjectaccessreviews", "*"): {"create"},
        ("agentflow.dev", "clusterworkflowtemplates", "*"): {"get", "list", "watch"},  # read, never written
    }
    assert grants == expected
    without_webhook = _rules(render(helm, "--set", "webhook.enabled=false"))
    assert without_webhook == {k: v for k, v in expected.items()
                               if k[0] not in ("admissionregistration.k8s.io", "authorization.k8s.io")}


PERSONAS = ("viewer", "runner", "approver", "prompt-author", "budget-admin")
KINDS = ("workflows", "agents", "promptversions", "budgets", "toolpolicies", "workflowtemplates", "workflowschedules")


def test_the_personas_grant_what_their_table_says_and_nothing_more(helm: tuple[str, Path]) -> None:
    objects = render(helm)
    read = {("agentflow.dev", k, "*"): {"get", "list", "watch"} for k in KINDS}
    write = {"create", "update", "patch", "delete"}

    def plus(extra: dict[tuple[str, str, str], set[str]]) -> dict[tuple[str, str, str], set[str]]:
        return {**read, **{k: read.get(k, set()) | v for k, v in extra.items()}}

    expected = {
        "viewer": read,
        "runner": plus({("agentflow.dev", "workflows", "*"): write,
                        ("agentflow.dev", "workflowschedules", "*"): write}),
        "approver": plus({("agentflow.dev", "workflows", "*"): {"patch"},
                          ("agentflow.dev", "workflows/approval", "*"): {"approve"}}),
        "prompt-author": plus({("agentflow.dev", "promptversions", "*"): write,
                               ("agentflow.dev", "agents", "*"): write}),
        "budget-admin": plus({("agentflow.dev", "budgets", "*"): write}),
    }
    for persona in PERSONAS:
        key = ("ClusterRole", f"{RELEASE}-{persona}")
        assert _rules(objects, key) == expected[persona], persona
        labels = objects[key]["metadata"]["labels"]
        assert labels["agentflow.dev/persona"] == persona and labels["app.kubernetes.io/component"] == "persona"
        assert not any(label.startswith("rbac.authorization.k8s.io/aggregate-to-") for label in labels), labels
    # Only the approver may approve; no persona reads Secrets, writes ToolPolicies or escalates.
    approvers = [p for p in PERSONAS if ("agentflow.dev", "workflows/approval", "*") in _rules(
        objects, ("ClusterRole", f"{RELEASE}-{p}"))]
    assert approvers == ["approver"]
    for persona in PERSONAS:
        for (group, resource, _), verbs in _rules(objects, ("ClusterRole", f"{RELEASE}-{persona}")).items():
            assert group == "agentflow.dev" and "*" not in verbs and resource != "secrets"
            assert resource != "toolpolicies" or verbs == {"get", "list", "watch"}

    aggregated = render(helm, "--set", "personas.aggregateToDefaultRoles=true")
    into = {p: {k.removeprefix("rbac.authorization.k8s.io/aggregate-to-")
                for k in aggregated[("ClusterRole", f"{RELEASE}-{p}")]["metadata"]["labels"]
                if k.startswith("rbac.authorization.k8s.io/aggregate-to-")} for p in PERSONAS}
    assert into == {"viewer": {"view"}, "runner": {"edit"}, "approver": {"admin"}, "prompt-author": {"edit"},
                    "budget-admin": set()}
    off = render(helm, "--set", "personas.create=false")
    assert not any(key == ("ClusterRole", f"{RELEASE}-{p}") for key in off for p in PERSONAS)


def test_values_change_the_rendering(helm: tuple[str, Path]) -> None:
    objects = render(helm, "--set", "replicaCount=1", "--set", "webhook.enabled=false",
                     "--set", "watchNamespaces={team-a,team-b}", "--set", "steps.env.AGENTFLOW_MODEL_MODE=offline",
                     "--set", "signingKey.existingSecret=mine", "--set", "signingKey.secretKey=hmac")
    assert ("PodDisruptionBudget", RELEASE) not in objects and ("Secret", "agentflow-signing") not in objects
    assert {key for key in objects if key[0].endswith("KopfPeering")} == {
        ("KopfPeering", "agentflow@team-a"), ("KopfPeering", "agentflow@team-b")}
    (container,) = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--webhook") for a in container["args"])
    assert {"--namespace=team-a", "--namespace=team-b", "--step-env=AGENTFLOW_MODEL_MODE=offline"} <= set(
        container["args"])
    assert {p["name"] for p in container["ports"]} == {"callback", "metrics"}
    volumes = {v["name"]: v for v in objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["signing-key"]["secret"]["secretName"] == "mine"
    assert volumes["signing-key"]["secret"]["items"] == [{"key": "hmac", "path": "hmac"}]
    assert _operator_args(container).signing_key_file == "/etc/agentflow/signing/hmac"


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

    # No cluster DNS needed: the replica's own address, $(POD_IP) expanded by the kubelet, which needs POD_IP
    # defined before it.
    default = env(render(helm))
    assert default["AGENTFLOW_CALLBACK_URL"]["value"] == "http://$(POD_IP):8081"
    order = list(default)
    assert order.index("POD_IP") < order.index("AGENTFLOW_CALLBACK_URL")
    # kopf names peers by POD_ID: the peering's status lists the replicas by pod name.
    assert default["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    service = f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:8081"
    assert env(render(helm, "--set-string", f"callback.url={service}"))["AGENTFLOW_CALLBACK_URL"]["value"] == service
    assert env(render(helm, "--set", "callback.port=9000"))["AGENTFLOW_CALLBACK_URL"]["value"] == \
        "http://$(POD_IP):9000"


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
    assert parsed.listen == "0.0.0.0:8082"
    # With a cluster it checks step pods' projected tokens (TokenReview): no key of the operator's.
    assert parsed.token_key_file is None and parsed.model_endpoints is None
    assert parsed.gateway_upstream == "openai-http" and parsed.cache_ttl == 300 and parsed.cache_size == 10000
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENTFLOW_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "agentflow-postgres", "key": "dsn"}
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {"/tmp": False}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "gateway"}

    # The gateway's Service selects its pods and not the operator's, and the operator's selects none of its.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    operator_labels = objects[("Deployment", RELEASE)]["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", GATEWAY)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"gateway": 8082, "metrics": 9091}
    assert parsed.metrics_listen == "0.0.0.0:9091"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"gateway": 8082, "metrics": 9091}
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
                  ("", "secrets"): {"get"}, ("", "pods"): {"get"}}
"""In the namespaces the gateway serves: Budgets, Agents, credential Secrets, and the step pod a token names."""
GATEWAY_CLUSTER_GRANTS = {("authentication.k8s.io", "tokenreviews"): {"create"}}
"""Cluster-scoped, so a ClusterRole whatever watchNamespaces says: checking step pods' projected tokens."""


def test_gateway_rbac_reads_budgets_agents_secrets_and_pods_only(helm: tuple[str, Path]) -> None:
    subject = [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]
    cluster_wide = render(helm, "--set", "gateway.enabled=true")
    assert _gateway_rules(cluster_wide[("ClusterRole", GATEWAY)]) == GATEWAY_GRANTS | GATEWAY_CLUSTER_GRANTS
    binding = cluster_wide[("ClusterRoleBinding", GATEWAY)]
    assert binding["roleRef"]["name"] == GATEWAY and binding["subjects"] == subject
    # The operator's own role still has no Secrets.
    assert not any("secrets" in r["resources"] for r in cluster_wide[("ClusterRole", RELEASE)]["rules"])

    # Watching namespaces: Secrets and pods only there, through a Role in each; cluster-wide only TokenReviews.
    scoped = render(helm, "--set", "gateway.enabled=true", "--set", "watchNamespaces={team-a,team-b}")
    assert _gateway_rules(scoped[("ClusterRole", GATEWAY)]) == GATEWAY_CLUSTER_GRANTS
    cluster_binding = scoped[("ClusterRoleBinding", GATEWAY)]
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": GATEWAY}
    assert cluster_binding["subjects"] == subject
    for ns in ("team-a", "team-b"):
        role, binding = scoped[("Role", f"{GATEWAY}@{ns}")], scoped[("RoleBinding", f"{GATEWAY}@{ns}")]
        assert _gateway_rules(role) == GATEWAY_GRANTS
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY}
        assert binding["subjects"] == subject
    assert {k for k in scoped if k[0] in ("Role", "RoleBinding") and k[1].startswith(GATEWAY)} == {
        (kind, f"{GATEWAY}@{ns}") for kind in ("Role", "RoleBinding") for ns in ("team-a", "team-b")}
    without_rbac = render(helm, "--set", "gateway.enabled=true", "--set", "rbac.create=false",
                          "--set", "personas.create=false")  # the users' roles have a switch of their own
    assert not [k for k in without_rbac if k[0] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


# -- a fresh clone, as the README installs it


def test_the_readme_install_renders_with_defaults_only(helm: tuple[str, Path]) -> None:
    """`helm install agentflow charts/agentflow --set postgres.dsn=...`: no dependency build, images that the
    local build provides (tests/e2e/cluster/images.sh tags them with the appVersion), no cluster DNS needed."""
    _, charts = helm
    assert not list((charts / "agentflow" / "charts").glob("*.tgz")), "nothing was built"
    readme = (ROOT / "README.md").read_text()
    assert "helm install agentflow charts/agentflow --set postgres.dsn=" in readme
    dsn = ["--set", "postgres.dsn=postgresql://agentflow:pw@db:5432/agentflow"]
    objects = render(helm, "--include-crds", required=dsn)
    crds = {name for kind, name in objects if kind == "CustomResourceDefinition"}
    assert crds == {p.name.removesuffix(".yaml") for p in CRDS.glob("*.yaml")} | {
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    container = _container(objects, RELEASE)
    assert container["image"] == f"localhost/agentflow-operator:{APP_VERSION}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENTFLOW_STEP_IMAGE"]["value"] == f"localhost/agentflow-runtime:{APP_VERSION}"
    assert env["AGENTFLOW_CALLBACK_URL"]["value"] == "http://$(POD_IP):8081"
    assert "svc." not in json.dumps(objects[("Deployment", RELEASE)]), "nothing that needs cluster DNS"
    images = (ROOT / "tests/e2e/cluster/images.sh").read_text()
    assert "appVersion" in images, "the local build tags the images with the chart's appVersion"


# -- values.schema.json


def _unschemaed(values: Any, node: dict[str, Any], path: str) -> Iterator[str]:
    """Values below ``node`` that the schema does not type and describe. A node without ``properties`` and
    without a typed ``additionalProperties`` is a Kubernetes structure passed through (a securityContext, say):
    described as a whole."""
    if "type" not in node or not node.get("description"):
        yield path
    if not isinstance(values, dict):
        return
    extra = node.get("additionalProperties")
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key in node.get("properties", {}):
            yield from _unschemaed(value, node["properties"][key], where)
        elif isinstance(extra, dict):
            yield from _unschemaed(value, {"description": "(map value)", **extra}, where)
        elif "properties" in node or extra is False:
            yield f"{where} (not in the schema)"


def test_every_value_is_typed_and_described() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    problems = [p for p in _unschemaed(values, schema, "") if p]
    assert not problems, f"values the schema does not type and describe: {problems}"
    assert schema["additionalProperties"] is False, "an unknown (misspelt) top-level value is an error"
    jsonschema.Draft7Validator.check_schema(schema)
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(values)), "values.yaml fails its own schema"


@pytest.mark.parametrize(("option", "message"), [
    ("replicaCount=two", "replicaCount: Invalid type. Expected: integer, given: string"),
    ("webhook.references=maybe", 'webhook.references: webhook.references must be one of the following: "warn", '
                                 '"reject"'),
    ("callback.port=70000", "callback.port: Must be less than or equal to 65535"),
    ("watchNamespaces[0]=Team_A", "watchNamespaces.0: Does not match pattern"),
    ("gateway.upstrem=offline", "gateway: Additional property upstrem is not allowed"),
    ("image.pullPolicy=Sometimes", "image.pullPolicy: image.pullPolicy must be one of the following"),
    ("postgres.dsn=mysql://x", "postgres.dsn: Does not match pattern"),
    ("steps.statusPreviews=all", 'steps.statusPreviews: steps.statusPreviews must be one of the following: '
                                 '"masked", "none"'),
    ("reconcile.maxConcurrent=0", "reconcile.maxConcurrent: Must be greater than or equal to 1"),
    ("webhook.checkCredentialSecrets=maybe", "webhook.checkCredentialSecrets: Invalid type. Expected: boolean"),
    ("tokenKey.existingSecret=old", "(root): Additional property tokenKey is not allowed"),
    ("egress.deny[0]=10.0.0.0/8 10.1.0.0/16", "egress.deny.0: Does not match pattern"),
    ("models.endpoints.endpoints[0].uri=https://x", "Additional property uri is not allowed"),
    ("console.port=0", "console.port: Must be greater than or equal to 1"),
    ("console.service.type=Ingress", "console.service.type: console.service.type must be one of the following"),
])
def test_helm_rejects_a_bad_value_naming_it(helm: tuple[str, Path], option: str, message: str) -> None:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED, "--set", option, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


# -- the approval signing key Secret


SIGNING = ("Secret", "agentflow-signing")


def _signing(objects: dict[tuple[str, str], dict[str, Any]]) -> str:
    return str(objects[SIGNING]["data"]["key"])


def _pod_checksum(objects: dict[tuple[str, str], dict[str, Any]], name: str = RELEASE) -> str:
    return str(objects[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"])


def _operator_reads(data: str, tmp_path: Path) -> bytes:
    """The key the operator gets from the mounted file (its own reader: stripped, >= 32 bytes or SystemExit)."""
    from agentflow.controller.main import signing_key

    path = tmp_path / "key"
    path.write_bytes(base64.b64decode(data, validate=True))
    return signing_key(str(path))


def test_the_signing_key_is_the_same_on_every_render_when_it_can_be(helm: tuple[str, Path], tmp_path: Path) -> None:
    """Offline (`helm template`, Argo CD) lookup finds nothing: with postgres.dsn the key is derived from it, so
    two renders agree (no diff, no operator roll, no voided approvals); with only postgres.existingSecret there is
    nothing to derive from, and each render draws a new one: set signingKey.existingSecret there (the README)."""
    dsn = ["--set", "postgres.dsn=postgresql://agentflow:pw@db:5432/agentflow"]
    first, second = render(helm, required=dsn), render(helm, required=dsn)
    assert _signing(first) == _signing(second) and _pod_checksum(first) == _pod_checksum(second)
    key = _operator_reads(_signing(first), tmp_path)
    assert len(key) >= 32 and key.isascii() and key.decode().isprintable(), "a text file the operator accepts"
    other = render(helm, required=["--set", "postgres.dsn=postgresql://agentflow:other@db:5432/agentflow"])
    assert _signing(other) != _signing(first), "derived from the DSN, not a constant"
    elsewhere = render(helm, "--namespace", "team-b", required=dsn)
    assert _signing(elsewhere) != _signing(first), "and from the release"
    postgres = base64.b64decode(first[("Secret", "agentflow-postgres")]["data"]["dsn"])
    assert base64.b64decode(_signing(first)) != postgres and b"postgresql" not in key
    secret = first[SIGNING]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not [k for k in first if k[0] == "Secret" and k[1].endswith("-token")], "the token key is gone"

    # The limit: nothing to derive from offline. A random key is text too.
    randoms = render(helm), render(helm)
    assert _signing(randoms[0]) != _signing(randoms[1])
    assert _pod_checksum(randoms[0]) != _pod_checksum(randoms[1]), "a new key rolls the operator (read at start)"
    random_key = _operator_reads(_signing(randoms[0]), tmp_path)
    assert len(random_key) == 48 and random_key.isalnum()
    assert SIGNING not in render(helm, "--set", "signingKey.existingSecret=mine")


def test_the_signing_key_is_the_operators_only(helm: tuple[str, Path]) -> None:
    """Mounted read-only in the operator (--signing-key-file); the gateway gets neither it nor any token key, and
    its pods do not roll when the signing key changes."""
    from agentflow.commands.gateway import build_parser as gateway_parser

    objects = render(helm, "--set", "gateway.enabled=true")
    operator_pod = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    (mount,) = [m for m in _container(objects, RELEASE)["volumeMounts"] if m["name"] == "signing-key"]
    assert mount == {"name": "signing-key", "mountPath": "/etc/agentflow/signing", "readOnly": True}
    (volume,) = [v for v in operator_pod["volumes"] if v["name"] == "signing-key"]
    assert volume["secret"]["secretName"] == "agentflow-signing" and volume["secret"]["defaultMode"] == 0o440

    gateway = objects[("Deployment", GATEWAY)]
    assert "agentflow-signing" not in json.dumps(gateway) and "token-key" not in json.dumps(gateway)
    args = _container(objects, GATEWAY)["args"]
    assert not [a for a in args if a.startswith(("--token-key", "--signing-key"))]
    assert gateway_parser().parse_args(args[1:]).token_key_file is None
    assert not [m for m in _container(objects, GATEWAY)["volumeMounts"] if m["mountPath"].startswith("/etc/")]
    assert not [e for e in _container(objects, GATEWAY)["env"] if "KEY" in e["name"]]
    # Offline, a random signing key each render: the operator's checksum changes, the gateway's does not.
    again = render(helm, "--set", "gateway.enabled=true")
    assert _pod_checksum(again) != _pod_checksum(objects)
    assert _pod_checksum(again, GATEWAY) == _pod_checksum(objects, GATEWAY)


# -- the operator's platform flags


def _operator_args(container: dict[str, Any]) -> Any:
    """The operator's arguments through its real parser: a flag it does not know fails the test."""
    from agentflow.controller.main import build_parser as operator_parser

    assert container["args"][0] == "operator"
    return operator_parser().parse_args(container["args"][1:])


def test_step_pod_network_flags(helm: tuple[str, Path]) -> None:
    """--callback-pods always (the operator's selector labels, so step pods' NetworkPolicies let its pods in by
    label), --gateway-pods with the gateway (its Service's selector), --egress-deny per egress.deny entry; the
    operator's own parsing (network_config) accepts them."""
    from agentflow.controller.main import network_config

    objects = render(helm)
    parsed = _operator_args(_container(objects, RELEASE))
    operator_selector = objects[("Deployment", RELEASE)]["spec"]["selector"]["matchLabels"]
    config = network_config(parsed, {})
    assert config.callback_pods == (NAMESPACE, operator_selector) and config.gateway_pods is None
    assert parsed.callback_pods == (f"{NAMESPACE}:app.kubernetes.io/instance={RELEASE},"
                                    "app.kubernetes.io/name=agentflow")
    assert parsed.egress_deny == []

    deny = ["10.244.0.0/16", "10.96.0.0/12", "172.18.0.2:6443", "[fd00::1]:6443"]
    objects = render(helm, "--set", "gateway.enabled=true", "--set-json", f"egress.deny={json.dumps(deny)}",
                     "--namespace", "platform")
    container = _container(objects, RELEASE)
    assert [a for a in container["args"] if a.startswith("--egress-deny")] == [f"--egress-deny={d}" for d in deny]
    parsed = _operator_args(container)
    assert parsed.egress_deny == deny
    config = network_config(parsed, {})
    gateway_selector = objects[("Service", GATEWAY)]["spec"]["selector"]
    assert config.callback_pods == ("platform", objects[("Deployment", RELEASE)]["spec"]["selector"]["matchLabels"])
    assert config.gateway_pods == ("platform", gateway_selector)
    assert gateway_selector.items() <= objects[("Deployment", GATEWAY)]["spec"]["template"]["metadata"][
        "labels"].items()
    for entry in ("10.244.1.7", "172.18.0.2:6443", "169.254.169.254"):  # the values and the built-in list
        host, _, port = entry.partition(":")
        assert config.deny.problem(host, int(port) if port else None) is not None, entry


def test_status_previews(helm: tuple[str, Path]) -> None:
    assert _operator_args(_container(render(helm), RELEASE)).status_previews == "masked"
    objects = render(helm, "--set", "steps.statusPreviews=none")
    assert "--status-previews=none" in _container(objects, RELEASE)["args"]
    assert _operator_args(_container(objects, RELEASE)).status_previews == "none"


def test_max_concurrent_reconciles(helm: tuple[str, Path]) -> None:
    assert _operator_args(_container(render(helm), RELEASE)).max_concurrent_reconciles == 32
    objects = render(helm, "--set", "reconcile.maxConcurrent=8")
    assert _operator_args(_container(objects, RELEASE)).max_concurrent_reconciles == 8


def test_retention(helm: tuple[str, Path]) -> None:
    """The chart's default TTL per phase reaches the operator's parser; null keeps a phase; the sweep off."""
    from agentflow.models import RunTtl

    args = _operator_args(_container(render(helm), RELEASE))
    assert args.ttl_seconds_after_finished == RunTtl(succeeded=604800, failed=1209600, cancelled=604800)
    assert not args.no_orphan_sweep
    objects = render(helm, "--set", "retention.ttlSecondsAfterFinished.failed=null",
                     "--set", "retention.ttlSecondsAfterFinished.succeeded=60", "--set", "retention.orphanSweep=false")
    args = _operator_args(_container(objects, RELEASE))
    assert args.ttl_seconds_after_finished == RunTtl(succeeded=60, cancelled=604800)
    assert args.no_orphan_sweep
    kept = render(helm, "--set-json", 'retention.ttlSecondsAfterFinished={"succeeded":null,"failed":null,'
                  '"cancelled":null}')
    assert not any(a.startswith("--ttl-seconds-after-finished") for a in _container(kept, RELEASE)["args"])
    binary, charts = helm
    refused = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED,
                  "--set", "retention.ttlSecondsAfterFinished.failed=-1", ok=False)
    assert refused.returncode != 0 and "ttlSecondsAfterFinished" in refused.stderr


def test_credential_secret_check_adds_secrets_get_only_when_on(helm: tuple[str, Path]) -> None:
    """Off (the default): no --webhook-check-secrets and no Secrets in the operator's RBAC (the gateway refuses
    an unlabelled Secret at call time). On: the flag, and get on Secrets where the operator's namespaced rules
    are (the ClusterRole, or each watched namespace's Role, never both)."""
    def secrets(rules: dict[tuple[str, str, str], set[str]]) -> set[str] | None:
        return rules.get(("", "secrets", "*"))

    default = render(helm)
    assert "--webhook-check-secrets" not in _container(default, RELEASE)["args"]
    assert secrets(_rules(default)) is None

    on = render(helm, "--set", "webhook.checkCredentialSecrets=true")
    assert _operator_args(_container(on, RELEASE)).webhook_check_secrets is True
    assert secrets(_rules(on)) == {"get"}
    assert _rules(on).keys() - _rules(default).keys() == {("", "secrets", "*")}

    scoped = render(helm, "--set", "webhook.checkCredentialSecrets=true", "--set", "watchNamespaces={team-a,team-b}")
    assert secrets(_rules(scoped)) is None, "not cluster-wide when namespaces are watched"
    for ns in ("team-a", "team-b"):
        assert secrets(_rules(scoped, ("Role", f"{RELEASE}@{ns}"))) == {"get"}

    # No webhook, no check: neither the flag nor the permission.
    off = render(helm, "--set", "webhook.checkCredentialSecrets=true", "--set", "webhook.enabled=false")
    assert "--webhook-check-secrets" not in _container(off, RELEASE)["args"] and secrets(_rules(off)) is None


def test_triggers_are_off_by_default_and_on_add_the_flag_the_port_and_secrets_get(helm: tuple[str, Path]) -> None:
    """Off: no --trigger-listen, no port, no Secrets. On: the flag the operator parses, a container and a
    Service port named triggers, and get on Secrets where the namespaced rules are (each watched namespace's
    Role when there are some, never cluster-wide then)."""
    default = render(helm)
    assert _operator_args(_container(default, RELEASE)).trigger_listen == ""
    assert "triggers" not in [p["name"] for p in default[("Service", RELEASE)]["spec"]["ports"]]
    assert _rules(default).get(("", "secrets", "*")) is None

    on = render(helm, "--set", "triggers.enabled=true", "--set", "triggers.port=8093")
    container = _container(on, RELEASE)
    assert _operator_args(container).trigger_listen == "0.0.0.0:8093"
    assert {"name": "triggers", "containerPort": 8093, "protocol": "TCP"} in container["ports"]
    assert {"name": "triggers", "port": 8093, "targetPort": "triggers", "protocol": "TCP"} in \
        on[("Service", RELEASE)]["spec"]["ports"]
    assert _rules(on).keys() - _rules(default).keys() == {("", "secrets", "*")}
    assert _rules(on)[("", "secrets", "*")] == {"get"}

    scoped = render(helm, "--set", "triggers.enabled=true", "--set", "watchNamespaces={team-a}")
    assert _rules(scoped).get(("", "secrets", "*")) is None
    assert _rules(scoped, ("Role", f"{RELEASE}@team-a"))[("", "secrets", "*")] == {"get"}


def test_model_endpoints_are_a_config_map_both_read(helm: tuple[str, Path]) -> None:
    from agentflow.commands.gateway import build_parser as gateway_parser
    from agentflow.gateway.endpoints import EndpointPolicy

    flag = "--model-endpoints=/etc/agentflow/models/endpoints.yaml"
    default = render(helm, "--set", "gateway.enabled=true")
    assert ("ConfigMap", "agentflow-model-endpoints") not in default
    for name in (RELEASE, GATEWAY):
        assert not [a for a in _container(default, name)["args"] if a.startswith("--model-endpoint")]

    policy = {"endpoints": [{"url": "https://llm.internal.example/v1", "namespaces": ["team-*", "support"],
                             "environmentKey": False, "region": "eu-west-1"}],
              "providerRegions": {"openai": "us"}}
    objects = render(helm, "--set", "gateway.enabled=true", "--set-json", f"models.endpoints={json.dumps(policy)}")
    config_map = objects[("ConfigMap", "agentflow-model-endpoints")]
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert yaml.safe_load(config_map["data"]["endpoints.yaml"]) == policy
    parsed_policy = EndpointPolicy.from_text(config_map["data"]["endpoints.yaml"], "endpoints.yaml")
    assert parsed_policy.problem("team-a", "https://llm.internal.example/v1/chat") is None
    assert parsed_policy.problem("other", "https://llm.internal.example/v1") is not None

    for name, parser in ((RELEASE, None), (GATEWAY, gateway_parser)):
        container = _container(objects, name)
        assert flag in container["args"]
        parsed = _operator_args(container) if parser is None else parser().parse_args(container["args"][1:])
        assert parsed.model_endpoints == "/etc/agentflow/models/endpoints.yaml"
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-endpoints"]
        assert mount == {"name": "model-endpoints", "mountPath": "/etc/agentflow/models", "readOnly": True}
        pod = objects[("Deployment", name)]["spec"]["template"]
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "model-endpoints"]
        assert volume["configMap"]["name"] == "agentflow-model-endpoints"
        assert volume["configMap"]["items"] == [{"key": "endpoints.yaml", "path": "endpoints.yaml"}]
        assert "checksum/model-endpoints" in pod["metadata"]["annotations"], "a changed policy rolls the pods"


# -- the admission configurations belong to the release


def test_the_webhook_configurations_are_the_releases(helm: tuple[str, Path]) -> None:
    from agentflow.controller import main as operator_main

    objects = render(helm)
    managed = re.search(r'settings\.admission\.managed = "([^"]+)"', Path(operator_main.__file__).read_text())
    assert managed, "controller/main.py no longer sets settings.admission.managed"
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = objects[(kind, managed.group(1))]
        # No webhooks: the operator fills them in (its pod IP and CA); helm's three-way merge then never removes
        # them on an upgrade, as the chart does not name the field.
        assert "webhooks" not in config
        assert config["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    off = render(helm, "--set", "webhook.enabled=false")
    assert not [k for k in off if k[0].endswith("WebhookConfiguration")]
    # The operator may only patch those (creating cannot be limited to a name: kopf finds them there).
    grants = _rules(objects)
    assert grants[("admissionregistration.k8s.io", "validatingwebhookconfigurations", managed.group(1))] == {
        "get", "patch"}


# -- RBAC scoped to the watched namespaces


def test_with_watch_namespaces_the_operator_gets_roles_there_only(helm: tuple[str, Path]) -> None:
    objects = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    cluster = _rules(objects)
    assert cluster == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "*"): {"list", "watch"},
        ("", "namespaces", "*"): {"list", "watch"},
        ("authentication.k8s.io", "tokenreviews", "*"): {"create"},
        ("agentflow.dev", "clusterworkflowtemplates", "*"): {"get", "list", "watch"},
        **{("admissionregistration.k8s.io", w, "*"): {"create"}
           for w in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")},
        **{("admissionregistration.k8s.io", w, "agentflow.dev"): {"get", "patch"}
           for w in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")},
        ("authorization.k8s.io", "subjectaccessreviews", "*"): {"create"},
    }, "cluster-wide: only what is cluster-scoped (the Budget status loop lists each watched namespace)"
    kinds = ["workflows", "agents", "promptversions", "budgets", "toolpolicies", "workflowtemplates",
             "workflowschedules", "workflowtriggers", "promptrollouts"]
    for ns in ("team-a", "team-b"):
        role = _rules(objects, ("Role", f"{RELEASE}@{ns}"))
        assert role == {
            **{("agentflow.dev", k, "*"): {"get", "list", "watch", "patch"} for k in kinds},
            **{("agentflow.dev", f"{k}/status", "*"): {"get", "patch", "update"} for k in kinds},
            ("agentflow.dev", "workflows", "*"): {"get", "list", "watch", "patch", "create", "delete"},
            ("agentflow.dev", "promptversions", "*"): {"get", "list", "watch", "patch", "create"},
            ("", "pods", "*"): {"get", "list", "watch", "create", "delete"},
            ("networking.k8s.io", "networkpolicies", "*"): {"get", "list", "watch", "create", "update", "delete"},
            ("", "events", "*"): {"create", "patch"},
            ("events.k8s.io", "events", "*"): {"create", "patch"},
        }
        binding = objects[("RoleBinding", f"{RELEASE}@{ns}")]
        assert binding["metadata"]["namespace"] == ns
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RELEASE}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    namespaced = {k for k in objects if k[0] in ("Role", "RoleBinding")}
    assert namespaced == {(kind, f"{RELEASE}@{ns}") for kind in ("Role", "RoleBinding") for ns in ("team-a", "team-b")
                          } | {(kind, f"{RELEASE}-shards@{NAMESPACE}") for kind in ("Role", "RoleBinding")}
    # Under kopf peering (sharding off) each watched namespace has its KopfPeering, and the Role grants it.
    peering = render(helm, "--set", "watchNamespaces={team-a,team-b}", "--set", "sharding.enabled=false")
    for ns in ("team-a", "team-b"):
        assert ("KopfPeering", f"agentflow@{ns}") in peering
        assert _rules(peering, ("Role", f"{RELEASE}@{ns}"))[("kopf.dev", "kopfpeerings", "*")] == {
            "get", "list", "watch", "patch"}


# -- the gateway's NetworkPolicy


def test_the_gateway_network_policy(helm: tuple[str, Path]) -> None:
    objects = render(helm, "--set", "gateway.enabled=true")
    policy = objects[("NetworkPolicy", GATEWAY)]["spec"]
    assert policy["podSelector"]["matchLabels"] == objects[("Service", GATEWAY)]["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    api, metrics = policy["ingress"]
    steps = {"app.kubernetes.io/managed-by": "agentflow", "app.kubernetes.io/component": "step"}
    operator = objects[("Deployment", RELEASE)]["spec"]["selector"]["matchLabels"]
    assert api["ports"] == [{"port": 8082, "protocol": "TCP"}]
    assert api["from"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": steps}},
                           {"podSelector": {"matchLabels": operator}}]
    assert metrics == {"from": [{"podSelector": {}}], "ports": [{"port": 9091, "protocol": "TCP"}]}
    providers, apiserver, postgres, dns = policy["egress"]
    assert providers["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert providers["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in providers["to"][0]["ipBlock"][
        "except"]
    # Offline there is no Endpoints lookup: the API server's ports to any address.
    assert apiserver == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert postgres == {"ports": [{"port": 5432, "protocol": "TCP"}]}
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}

    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    custom = render(helm, "--set", "gateway.enabled=true", "--set", "watchNamespaces={team-a}",
                    "--set-json", f"gateway.networkPolicy.metricsFrom=[{json.dumps(monitoring)}]",
                    "--set-json", 'gateway.networkPolicy.egress.providers='
                                  '[{"to":[{"ipBlock":{"cidr":"203.0.113.0/24"}}],"ports":[443,8443]}]',
                    "--set-json", 'gateway.networkPolicy.egress.apiServer.to=[{"ipBlock":{"cidr":"10.0.0.1/32"}}]',
                    "--set", "gateway.networkPolicy.egress.dns.enabled=false",
                    "--set", "gateway.metrics.port=9300")
    spec = custom[("NetworkPolicy", GATEWAY)]["spec"]
    api, metrics = spec["ingress"]
    assert api["from"][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
                              "podSelector": {"matchLabels": steps}}
    assert metrics == {"from": [monitoring], "ports": [{"port": 9300, "protocol": "TCP"}]}
    assert [r.get("to") for r in spec["egress"]] == [[{"ipBlock": {"cidr": "203.0.113.0/24"}}],
                                                     [{"ipBlock": {"cidr": "10.0.0.1/32"}}], None]
    assert "--metrics-listen=0.0.0.0:9300" in _container(custom, GATEWAY)["args"]
    assert ("NetworkPolicy", GATEWAY) not in render(helm, "--set", "gateway.enabled=true",
                                                    "--set", "gateway.networkPolicy.enabled=false")


def test_gateway_metrics_can_be_turned_off(helm: tuple[str, Path]) -> None:
    from agentflow.commands.gateway import build_parser as gateway_parser

    objects = render(helm, "--set", "gateway.enabled=true", "--set", "gateway.metrics.enabled=false")
    args = _container(objects, GATEWAY)["args"]
    assert gateway_parser().parse_args(args[1:]).metrics_listen == ""
    assert [p["name"] for p in objects[("Service", GATEWAY)]["spec"]["ports"]] == ["gateway"]
    assert len(objects[("NetworkPolicy", GATEWAY)]["spec"]["ingress"]) == 1


# -- Argo CD


def test_the_chart_ships_the_argocd_health_check_and_says_how_to_install_it() -> None:
    lua = CHART / "health" / "workflow.lua"
    assert lua.is_file()
    readme = (CHART / "README.md").read_text()
    assert "resource.customizations.health.agentflow.dev_Workflow" in readme and "health/workflow.lua" in readme


# -- events (NATS JetStream)


def test_events_are_off_by_default_and_the_chart_turns_them_on(helm: tuple[str, Path]) -> None:
    from agentflow.controller.main import build_parser as operator_parser
    from agentflow.events.settings import events_settings

    default = _container(render(helm), RELEASE)
    assert not any(a.startswith(("--nats", "--events")) for a in default["args"])
    assert events_settings(operator_parser().parse_args(default["args"][1:])) is None

    objects = render(helm, "--set", "events.enabled=true",
                     "--set-string", "events.natsUrl=nats://nats.nats.svc.cluster.local:4222",
                     "--set", "events.credentials.existingSecret=agentflow-nats",
                     "--set", "events.stream.maxBytes=10737418240", "--set", "events.stream.replicas=3",
                     "--set", "events.stream.duplicateWindow=30m")
    container = _container(objects, RELEASE)
    settings = events_settings(operator_parser().parse_args(container["args"][1:]))  # the operator's own parser
    assert settings is not None
    assert settings.connect.servers == ("nats://nats.nats.svc.cluster.local:4222",)
    assert settings.connect.creds == "/etc/agentflow/nats/nats.creds"
    assert (settings.stream.name, settings.stream.max_age, settings.stream.max_bytes, settings.stream.replicas,
            settings.stream.duplicate_window) == ("AGENTFLOW", 168 * 3600, 10737418240, 3, 1800)
    assert settings.publisher == "process"
    looped = _container(render(helm, "--set", "events.enabled=true", "--set-string", "events.natsUrl=nats://n:4222",
                               "--set", "events.publisher=loop"), RELEASE)
    assert events_settings(operator_parser().parse_args(looped["args"][1:])).publisher == "loop"  # type: ignore[union-attr]
    bad = run(helm[0], "template", RELEASE, str(helm[1] / "agentflow"), *REQUIRED, "--set", "events.enabled=true",
              "--set-string", "events.natsUrl=nats://n:4222", "--set", "events.publisher=thread", ok=False)
    assert bad.returncode != 0 and "publisher" in bad.stderr
    pod = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["nats-creds"]["secret"] == {"secretName": "agentflow-nats",
                                               "items": [{"key": "nats.creds", "path": "nats.creds"}]}
    assert {"name": "nats-creds", "mountPath": "/etc/agentflow/nats", "readOnly": True} in container["volumeMounts"]

    binary, charts = helm
    missing = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED, "--set", "events.enabled=true",
                  ok=False)
    assert missing.returncode != 0 and "events.natsUrl is required" in missing.stderr


# -- traces (OpenTelemetry)


def test_tracing_is_off_by_default_and_the_chart_turns_it_on(helm: tuple[str, Path]) -> None:
    from agentflow.commands.gateway import build_parser as gateway_parser
    from agentflow.controller.main import build_parser as operator_parser
    from agentflow.factory import trace_settings

    default = _container(render(helm), RELEASE)
    assert not any(a.startswith(("--otlp", "--trace")) for a in default["args"])
    assert not trace_settings(operator_parser().parse_args(default["args"][1:]), {}, "agentflow-operator").enabled

    objects = render(helm, "--set", "gateway.enabled=true",
                     "--set-string", "tracing.otlpEndpoint=http://otel-collector.observability:4318",
                     "--set-string", "tracing.urlTemplate=https://jaeger.example.com/trace/{trace_id}",
                     "--set", "tracing.content=true")
    operator = trace_settings(operator_parser().parse_args(_container(objects, RELEASE)["args"][1:]), {},
                              "agentflow-operator")  # the operator's own parser reads what the chart renders
    assert operator.endpoint == "http://otel-collector.observability:4318/v1/traces"
    assert operator.url_template == "https://jaeger.example.com/trace/{trace_id}" and operator.content
    gateway = trace_settings(gateway_parser().parse_args(_container(objects, GATEWAY)["args"][1:]), {},
                             "agentflow-gateway")
    assert gateway.endpoint == operator.endpoint and gateway.content and gateway.url_template is None

    # The gateway's NetworkPolicy lets it reach the collector only when tracing is on.
    def collector_rule(rendered: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
        egress = rendered[("NetworkPolicy", GATEWAY)]["spec"]["egress"]
        return [r for r in egress if {"port": 4318, "protocol": "TCP"} in r.get("ports", [])]

    assert len(collector_rule(objects)) == 1
    assert not collector_rule(render(helm, "--set", "gateway.enabled=true"))


@pytest.mark.parametrize(("option", "message"), [
    ("tracing.otlpEndpoint=otel-collector:4317", "tracing.otlpEndpoint: Does not match pattern"),
    ("tracing.urlTemplate=https://jaeger/trace/", "tracing.urlTemplate: Does not match pattern"),
    ("events.natsUrl=http://nats:4222", "events.natsUrl: Does not match pattern"),
    ("events.stream.maxAge=a week", "events.stream.maxAge: Does not match pattern"),
    ("events.stream.maxBytes=0", "events.stream.maxBytes"),
    ("events.stream.replicas=9", "events.stream.replicas: Must be less than or equal to 5"),
    ("events.stream.name=a.b", "events.stream.name: Does not match pattern"),
    ("events.strem.name=x", "events: Additional property strem is not allowed"),
])
def test_helm_rejects_a_bad_events_or_tracing_value_naming_it(helm: tuple[str, Path], option: str,
                                                              message: str) -> None:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED, "--set", option, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
CONSOLE = f"{RELEASE}-console"


def test_the_console_is_off_by_default_and_holds_no_credentials(helm: tuple[str, Path]) -> None:
    assert not [k for k in render(helm) if k[1] == CONSOLE]
    objects = render(helm, "--set", "console.enabled=true", "--set", "console.port=9000",
                     "--set", "console.extraArgs={--executor=subprocess}")
    deployment, service = objects[("Deployment", CONSOLE)], objects[("Service", CONSOLE)]
    pod = deployment["spec"]["template"]["spec"]
    # Every request acts as the signed-in person: the console's pod has no token of its own and no role.
    assert pod["automountServiceAccountToken"] is False
    assert not [k for k in objects if k[0] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
                and "console" in k[1]]
    (container,) = pod["containers"]
    assert container["args"] == ["ui", "--cluster", "--host=0.0.0.0", "--port=9000",
                                 "--kube-ca-file=/etc/agentflow/kube-ca/ca.crt", "--executor=subprocess"]
    assert container["env"][0]["name"] == "AGENTFLOW_POSTGRES_DSN"
    assert {"name": "kube-ca", "configMap": {"name": "kube-root-ca.crt"}} in pod["volumes"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/info", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert service["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    no_journal = render(helm, "--set", "console.enabled=true", "--set", "console.journal=false")
    assert "env" not in no_journal[("Deployment", CONSOLE)]["spec"]["template"]["spec"]["containers"][0]



def test_agents_memory_store_is_off_by_default_and_given_to_the_operator_and_the_gateway(
        helm: tuple[str, Path]) -> None:
    def memory_env(objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for (kind, _), obj in objects.items():
            if kind == "Deployment":
                for container in obj["spec"]["template"]["spec"]["containers"]:
                    found += [e for e in container.get("env", []) if e["name"] == "AGENTFLOW_MEMORY_DSN"]
        return found

    assert memory_env(render(helm)) == []
    given = memory_env(render(helm, "--set", "memory.existingSecret=agent-memory", "--set", "gateway.enabled=true"))
    assert len(given) == 2 and all(e["valueFrom"]["secretKeyRef"] == {"name": "agent-memory", "key": "dsn"}
                                   for e in given)


def test_notifications_values_reach_the_operators_flags_and_env(helm: tuple[str, Path]) -> None:
    from agentflow.controller.main import build_parser as operator_parser
    from agentflow.factory import notify_config

    default = _container(render(helm), RELEASE)
    config = notify_config(operator_parser().parse_args(default["args"][1:]), {})
    assert config.smtp is None and config.settings.console_url is None
    assert config.settings.webhook_hosts == ()  # no webhooks by default: the operator reads no Secrets
    assert not [e for e in default["env"] if e["name"].startswith("AGENTFLOW_SMTP")]
    assert _rules(render(helm)).get(("", "secrets", "*")) is None

    objects = render(helm, "--set-string", "notifications.consoleUrl=https://agentflow.example.com",
                     "--set-string", "notifications.smtp.host=smtp.example.com",
                     "--set-string", "notifications.smtp.from=agentflow@example.com",
                     "--set", "notifications.smtp.existingSecret=smtp-login",
                     "--set", "notifications.webhookHosts={hooks.slack.com,chat.example.com}")
    container = _container(objects, RELEASE)
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENTFLOW_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "smtp-login", "key": "password"}
    assert env["AGENTFLOW_SMTP_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "smtp-login", "key": "username"}
    config = notify_config(operator_parser().parse_args(container["args"][1:]),
                           {"AGENTFLOW_SMTP_USERNAME": "u", "AGENTFLOW_SMTP_PASSWORD": "p"})
    assert config.settings.console_url == "https://agentflow.example.com"
    assert config.settings.webhook_hosts == ("hooks.slack.com", "chat.example.com")
    assert config.smtp is not None and (config.smtp.host, config.smtp.port, config.smtp.sender) == (
        "smtp.example.com", 587, "agentflow@example.com")
    assert config.smtp.starttls and not config.smtp.tls and config.smtp.username == "u"
    # webhook hosts named: get on Secrets where the namespaced rules are (to read a tenant's webhook Secret)
    assert _rules(objects)[("", "secrets", "*")] == {"get"}
    scoped = render(helm, "--set", "notifications.webhookHosts={hooks.slack.com}", "--set", "watchNamespaces={team-a}")
    assert _rules(scoped).get(("", "secrets", "*")) is None
    assert _rules(scoped, ("Role", f"{RELEASE}@team-a"))[("", "secrets", "*")] == {"get"}


@pytest.mark.parametrize(("options", "message"), [
    (["--set-string", "notifications.smtp.host=smtp.example.com"], "notifications.smtp.from is required"),
    (["--set-string", "notifications.smtp.host=smtp.example.com", "--set-string",
      "notifications.smtp.from=a@example.com", "--set", "notifications.smtp.tls=true"], "exclude each other"),
    (["--set-string", "notifications.consoleUrl=agentflow.example.com"], "notifications.consoleUrl: Does not match"),
    (["--set", "notifications.webhookHosts={https://hooks.slack.com}"], "notifications.webhookHosts.0: Does not"),
    (["--set", "notifications.smtp.port=0"], "notifications.smtp.port: Must be greater than or equal to 1"),
])
def test_helm_rejects_bad_notifications_values_naming_them(helm: tuple[str, Path], options: list[str],
                                                           message: str) -> None:
    binary, charts = helm
    out = run(binary, "template", RELEASE, str(charts / "agentflow"), *REQUIRED, *options, ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
