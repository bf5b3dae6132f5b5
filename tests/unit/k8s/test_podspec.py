"""Step pods: the sandbox every pod gets, and what a step's ToolPolicy and Agent grant."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine.values import StepRequest
from agentflow.k8s import names
from agentflow.k8s.podspec import (
    DEADLINE_GRACE_SECONDS,
    ExecutionProfile,
    Owner,
    PodConfig,
    build_step_pod,
    fingerprint,
    parse_host,
    profile_for,
)
from agentflow.models import Agent, StepSpec, ToolPolicy, ToolSpec

from .cases import build

CASES = Path(__file__).parent / "cases"
OWNER = Owner("agentflow.dev/v1alpha1", "Workflow", "triage", "uid-1")
CONFIG = PodConfig(image="runtime:dev", callback_url="http://10.0.0.1:8443")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def request(node: str = "classify", attempt: int = 1, step: str | None = None) -> StepRequest:
    return StepRequest("uid-1", node, step or node.split("[")[0].split("#")[0], "llm", attempt, {})


def assert_sandboxed(pod: Mapping[str, Any]) -> None:
    """What every step pod must hold, whatever it runs (issue 4: steps as short-lived sandboxed pods)."""
    meta, spec = pod["metadata"], pod["spec"]
    assert names.is_dns_label(meta["name"]) and len(meta["name"]) <= 63
    for key, value in meta["labels"].items():
        assert _KEY.match(key) and len(key.split("/")[-1]) <= 63, key
        assert names.is_label_value(value), (key, value)
    assert meta["labels"][names.POD_LABEL] == meta["name"]
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec and "serviceAccount" not in spec
    # no Secret and no API token: the one projected volume is the attempt's own identity token, for the
    # audience "agentflow" only (the API server refuses it), bound to the pod
    for volume in spec.get("volumes", []):
        assert "secret" not in volume, volume
        if "projected" in volume:
            assert volume["name"] == "agentflow-token", volume
            [source] = volume["projected"]["sources"]
            assert set(source) == {"serviceAccountToken"} and source["serviceAccountToken"]["audience"] == "agentflow"
    assert spec["enableServiceLinks"] is False
    assert spec.get("hostNetwork", False) is False and spec.get("hostPID", False) is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0 and psc["runAsGroup"] > 0 and psc["fsGroup"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    csc = container["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["runAsNonRoot"] is True
    assert "privileged" not in csc
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
    assert tmp["emptyDir"]["sizeLimit"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {"AGENTFLOW_CALLBACK_URL", "AGENTFLOW_TOKEN_FILE", "AGENTFLOW_NODE", "AGENTFLOW_ATTEMPT",
            "AGENTFLOW_IDEMPOTENCY_KEY"} <= set(env)
    assert len(env) == len(container["env"]), "no variable twice"
    assert not any(e for e in container["env"] if "valueFrom" in e), "no secrets in step pods"


@pytest.mark.parametrize("path", sorted(CASES.glob("pod-*.yaml")), ids=lambda p: p.stem)
def test_every_case_pod_is_sandboxed(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    assert_sandboxed(build("pod", case["input"]))


NODES = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    st.builds(lambda s, i: f"{s}[{i}]", st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
              st.integers(0, 99_999)),
    st.builds(lambda s, i: f"{s}#{i}", st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
              st.integers(1, 999)),
)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?", fullmatch=True), NODES, st.integers(1, 101),
       st.one_of(st.none(), st.floats(0.001, 1e6)))
def test_every_built_pod_is_sandboxed(workflow: str, node: str, attempt: int, timeout: float | None) -> None:
    owner = Owner("agentflow.dev/v1alpha1", "Workflow", workflow, "uid")
    pod = build_step_pod(owner, "ns", request(node, attempt), CONFIG, timeout_seconds=timeout)
    assert_sandboxed(pod)
    assert pod["metadata"]["name"] == names.pod_name(workflow, node, attempt)
    assert pod["metadata"]["annotations"][names.NODE_ANNOTATION] == node


def env_of(pod: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_the_attempt_identity_cannot_be_overridden_by_config_or_grants() -> None:
    config = PodConfig("img", "http://cb", env={"AGENTFLOW_TOKEN": "config", "LOG": "debug"})
    pod = build_step_pod(OWNER, "ns", request(), config,
                         env={"AGENTFLOW_NODE": "other", "AGENTFLOW_CALLBACK_URL": "http://evil", "LOG": "info",
                              "AGENTFLOW_TOKEN_FILE": "/tmp/mine"})
    env = env_of(pod)
    assert "AGENTFLOW_TOKEN" not in env
    assert env["AGENTFLOW_TOKEN_FILE"] == "/var/run/agentflow/token"
    assert env["AGENTFLOW_NODE"] == "classify"
    assert env["AGENTFLOW_CALLBACK_URL"] == "http://cb"
    assert env["LOG"] == "info", "a step's grant overrides the operator-wide default"
    assert_sandboxed(pod)


def test_no_credential_is_in_the_pod_object_only_a_projected_token() -> None:
    pod = build_step_pod(OWNER, "ns", request(), CONFIG, timeout_seconds=30)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    [projected] = [v for v in spec["volumes"] if v["name"] == "agentflow-token"]
    source = projected["projected"]["sources"][0]["serviceAccountToken"]
    assert source == {"audience": "agentflow", "expirationSeconds": 600, "path": "token"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["agentflow-token"] == {"name": "agentflow-token", "mountPath": "/var/run/agentflow",
                                         "readOnly": True}
    long = build_step_pod(OWNER, "ns", request(), CONFIG, timeout_seconds=7200)["spec"]["volumes"][1]
    assert long["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 7230


def _as_the_api_server_returns_it(pod: Mapping[str, Any]) -> dict[str, Any]:
    """``pod`` with what a v1.33 API server adds on create (read off a real one: defaults of the pod, its
    containers and its volumes, status and server-set metadata)."""
    served = copy.deepcopy(dict(pod))
    served["metadata"].update(uid="3f1c", resourceVersion="1", creationTimestamp="2026-12-06T17:00:00Z")
    spec = served["spec"]
    spec.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler", securityContext=spec.get(
        "securityContext") or {}, terminationGracePeriodSeconds=30, preemptionPolicy="PreemptLowerPriority",
        priority=0, tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 300}])
    for container in spec["containers"]:
        container.update(imagePullPolicy=container.get("imagePullPolicy") or "IfNotPresent",
                         terminationMessagePath="/dev/termination-log")
    for volume in spec["volumes"]:
        for kind in ("projected", "secret", "configMap"):
            if kind in volume:
                volume[kind]["defaultMode"] = 420
    served["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    return served


def test_the_fingerprint_survives_the_api_servers_defaults_and_sees_a_changed_pod() -> None:
    """A restarted operator finds its own pod (as the API server returns it) by the recorded fingerprint,
    and no pod that runs something else, mounts something else or runs as something else passes as it."""
    pod = build_step_pod(OWNER, "ns", request(), CONFIG, timeout_seconds=30)
    recorded = fingerprint(pod)
    assert fingerprint(_as_the_api_server_returns_it(pod)) == recorded

    def changed(edit: Any) -> str:
        other = _as_the_api_server_returns_it(pod)
        edit(other["spec"])
        return fingerprint(other)

    assert changed(lambda s: s["containers"][0].update(command=["sh", "-c", "curl evil"])) != recorded
    assert changed(lambda s: s["containers"][0].update(image="evil:latest")) != recorded
    assert changed(lambda s: s.update(serviceAccountName="builder")) != recorded
    assert changed(lambda s: s.update(hostNetwork=True)) != recorded
    assert changed(lambda s: s["volumes"].append({"name": "db", "secret": {"secretName": "payments-db"}})) != recorded
    assert changed(lambda s: s["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"].update(
        audience="kubernetes")) != recorded


def test_runtime_class_explicit_then_config_default_then_none() -> None:
    explicit = build_step_pod(OWNER, "ns", request(), CONFIG, runtime_class="kata")
    assert explicit["spec"]["runtimeClassName"] == "kata"
    assert build_step_pod(OWNER, "ns", request(), CONFIG)["spec"]["runtimeClassName"] == "gvisor"
    bare = PodConfig("img", "http://cb", default_runtime_class=None)
    assert "runtimeClassName" not in build_step_pod(OWNER, "ns", request(), bare)["spec"]


@pytest.mark.parametrize(("timeout", "deadline"), [(1, 1 + DEADLINE_GRACE_SECONDS), (0.2, 1 + DEADLINE_GRACE_SECONDS),
                                                   (59.01, 60 + DEADLINE_GRACE_SECONDS), (None, None)])
def test_active_deadline_is_the_rounded_up_timeout_plus_grace(timeout: float | None, deadline: int | None) -> None:
    spec = build_step_pod(OWNER, "ns", request(), CONFIG, timeout_seconds=timeout)["spec"]
    assert spec.get("activeDeadlineSeconds") == deadline


def test_resources_override_single_values_and_reject_unknown_kinds() -> None:
    pod = build_step_pod(OWNER, "ns", request(), CONFIG, resources={"limits": {"memory": "2Gi"}})
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "2Gi"},
    }
    with pytest.raises(ValueError, match="only requests and limits"):
        build_step_pod(OWNER, "ns", request(), CONFIG, resources={"claims": {}})


def test_building_does_not_share_or_mutate_config() -> None:
    a = build_step_pod(OWNER, "ns", request(), CONFIG)
    a["spec"]["containers"][0]["resources"]["limits"]["memory"] = "99Gi"
    b = build_step_pod(OWNER, "ns", request(), CONFIG)
    assert b["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"


def test_extra_labels_never_replace_agentflow_labels() -> None:
    pod = build_step_pod(OWNER, "ns", request(attempt=2), CONFIG,
                         extra_labels={names.ATTEMPT_LABEL: "9", names.RUN_LABEL: "x", "team": "a"})
    labels = pod["metadata"]["labels"]
    assert labels[names.ATTEMPT_LABEL] == "2" and labels[names.RUN_LABEL] == "uid-1" and labels["team"] == "a"


@pytest.mark.parametrize(("entry", "expected"), [
    ("api.example.com", ("api.example.com", None)),
    ("api.example.com:8443", ("api.example.com", 8443)),
    ("https://api.example.com/v1", ("api.example.com", 443)),
    ("http://api.example.com:8080/x", ("api.example.com", 8080)),
    ("10.0.0.0/8", ("10.0.0.0/8", None)),
    ("192.0.2.1:5432", ("192.0.2.1", 5432)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("2001:db8::1", ("2001:db8::1", None)),
])
def test_parse_host(entry: str, expected: tuple[str, int | None]) -> None:
    assert parse_host(entry) == expected


def _policy(name: str, tools: list[dict[str, Any]], selector: dict[str, str] | None = None,
            runtime: str = "gvisor") -> ToolPolicy:
    return ToolPolicy.model_validate({"metadata": {"name": name}, "spec": {
        "agentSelector": {"matchLabels": selector or {}}, "runtimeClassName": runtime, "tools": tools}})


def _agent(labels: dict[str, str], runtime: str | None = None) -> Agent:
    spec: dict[str, Any] = {"role": "r", "model": {"name": "offline/echo"}}
    if runtime:
        spec["runtimeClassName"] = runtime
    return Agent.model_validate({"metadata": {"name": "a", "labels": labels}, "spec": spec})


TOOL_STEP = StepSpec.model_validate({"name": "s", "kind": "tool", "tool": "echo"})


def test_the_declaring_policy_wins_over_the_agent() -> None:
    policy = _policy("p", [{"name": "echo", "builtin": {"name": "echo"}}], runtime="kata")
    profile = profile_for(TOOL_STEP, _agent({}, runtime="runc"), [policy], None)
    assert profile == ExecutionProfile(runtime_class="kata")


def test_only_a_policy_matching_the_agent_grants_and_a_denied_tool_gets_no_grants() -> None:
    tools = [{"name": "echo", "builtin": {"name": "echo"}, "permissions": {"env": {"FROM": "policy"}}}]
    p1, p2 = _policy("p1", tools, {"team": "x"}, "one"), _policy("p2", tools, {"team": "y"}, "two")
    step = StepSpec.model_validate({"name": "s", "kind": "tool", "tool": "echo", "agentRef": {"name": "a"}})

    def agent(labels: dict[str, str]) -> Agent:
        a = _agent(labels, runtime="agent-class")
        return a.model_copy(update={"spec": a.spec.model_copy(update={"tools": ["echo"]})})

    assert profile_for(step, agent({"team": "y"}), [p1, p2]) == ExecutionProfile("two", None, {"FROM": "policy"})
    # Deny by default: no policy matches team=z, so nothing is granted (the Agent's runtime class only).
    assert profile_for(step, agent({"team": "z"}), [p1, p2]) == ExecutionProfile("agent-class")


def test_a_resolved_tool_replaces_the_granted_spec() -> None:
    tool = ToolSpec.model_validate({"name": "echo", "http": {"url": "https://x.example"},
                                    "permissions": {"env": {"K": "v"}}})
    policy = _policy("p", [{"name": "echo", "builtin": {"name": "echo"}}], runtime="kata")
    profile = profile_for(TOOL_STEP, None, [policy], tool)
    assert profile == ExecutionProfile("kata", None, {"K": "v"}, (("x.example", 443),))
