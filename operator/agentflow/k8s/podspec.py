"""The pod of one step attempt, built as a plain v1 Pod dict. Pure: no I/O.

A step pod runs ``agentflow step`` from the runtime image. It holds no provider credentials and no
Kubernetes API access, and nothing in its Pod object is a credential: it authenticates to the operator's
callback endpoint and the gateway with a service-account token the kubelet projects into
``/var/run/agentflow/token`` (audience ``agentflow``, bound to this pod: void once the pod is gone; the
namespace's ``default`` service account needs no RBAC; agentflow.services.identity maps it to the attempt).
Its sandbox::

    runtimeClassName            the ToolPolicy's or the Agent's (PodConfig.default_runtime_class otherwise)
    securityContext (pod)       runAsNonRoot, runAsUser/runAsGroup/fsGroup, seccomp RuntimeDefault
    securityContext (container) no privilege escalation, read-only root fs, all capabilities dropped
    no API token (automountServiceAccountToken false), no service links, restartPolicy Never (one pod =
    one attempt, exactly once)
    activeDeadlineSeconds       the step timeout plus a grace for pod start
    /tmp                        the only writable path (a size-limited emptyDir)

:mod:`agentflow.k8s.profile` compiles what the step's Agent and ToolPolicy grant (runtime class, resources,
env, egress) into an ExecutionProfile; :func:`agentflow.k8s.netpol.build_network_policy` turns its egress into
a NetworkPolicy. With ``PodConfig.gateway_url`` set, pods get ``AGENTFLOW_GATEWAY_URL``; with ``PodConfig.trace``,
``TRACEPARENT`` (env is not part of :func:`fingerprint`, and its value is derived from the attempt: deterministic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from ..engine.values import StepRequest
from ..telemetry import TRACEPARENT_ENV, attempt_ids
from . import names
from .names import pod_name
from .profile import ExecutionProfile, compile_profile, is_ip_or_cidr, parse_host, profile_for

__all__ = [
    "DEADLINE_GRACE_SECONDS", "RESERVED_ENV", "ExecutionProfile", "Owner", "PodConfig", "build_step_pod",
    "compile_profile", "fingerprint", "is_ip_or_cidr", "owner_reference", "parse_host", "pod_name", "profile_for",
    "step_labels",
]

DEADLINE_GRACE_SECONDS: Final = 30
"""Added to the step timeout for activeDeadlineSeconds: scheduling, image pull and start are not step time."""
TMP_SIZE_LIMIT: Final = "64Mi"
CONTAINER: Final = "step"
TOKEN_DIR: Final = "/var/run/agentflow"
TOKEN_FILE: Final = f"{TOKEN_DIR}/token"
MIN_TOKEN_SECONDS: Final = 600
"""The shortest lifetime the kubelet issues a projected token for; it rotates it at 80% of that."""
OTLP_TRACES_ENV: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""Where a step pod exports its own spans (PodConfig.otlp_endpoint)."""
RESERVED_ENV: Final = frozenset({
    "AGENTFLOW_CALLBACK_URL", "AGENTFLOW_TOKEN", "AGENTFLOW_TOKEN_FILE", "AGENTFLOW_NODE", "AGENTFLOW_ATTEMPT",
    "AGENTFLOW_IDEMPOTENCY_KEY", "AGENTFLOW_GATEWAY_URL", TRACEPARENT_ENV, OTLP_TRACES_ENV,
})
"""Set by the operator; a configured or granted variable of the same name is ignored."""


@dataclasses.dataclass(frozen=True)
class PodConfig:
    """Operator settings shared by every step pod."""

    image: str
    callback_url: str
    image_pull_policy: str = "IfNotPresent"
    default_runtime_class: str | None = "gvisor"
    cpu_request: str = "100m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    run_as_user: int = 10001
    gateway_url: str | None = None
    """The model gateway step pods call (env AGENTFLOW_GATEWAY_URL; their NetworkPolicy allows it)."""
    token_audience: str = "agentflow"
    """Audience of the projected service-account token step pods authenticate with."""
    trace: bool = False
    """Give pods ``TRACEPARENT``: the attempt's span (agentflow.telemetry.ids, derived from the run, node and
    attempt, so the same attempt always gets the same pod), the parent of its gateway and tool calls."""
    otlp_endpoint: str | None = None
    """The OTLP/HTTP traces URL step pods export their own spans to (env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
    their NetworkPolicy allows it); only with ``trace``. None: pods pass the trace context on, export nothing."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """The object that owns (and is the subject of) what is built: the Workflow."""

    api_version: str
    kind: str
    name: str
    uid: str


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller owner reference: deleting the Workflow deletes what it owns."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _resources(config: PodConfig, override: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    out = {
        "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
        "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
    }
    for kind, values in (override or {}).items():
        if kind not in out:
            raise ValueError(f"resources.{kind}: only requests and limits can be set")
        out[kind].update(values)
    return out


def _env(request: StepRequest, config: PodConfig, extra: Mapping[str, str]) -> list[dict[str, str]]:
    env = [
        {"name": "AGENTFLOW_CALLBACK_URL", "value": config.callback_url},
        {"name": "AGENTFLOW_TOKEN_FILE", "value": TOKEN_FILE},
        {"name": "AGENTFLOW_NODE", "value": request.node},
        {"name": "AGENTFLOW_ATTEMPT", "value": str(request.attempt)},
        {"name": "AGENTFLOW_IDEMPOTENCY_KEY", "value": request.idempotency_key},
    ]
    if config.gateway_url:
        env.append({"name": "AGENTFLOW_GATEWAY_URL", "value": config.gateway_url})
    if config.trace:
        env.append({"name": TRACEPARENT_ENV,
                    "value": attempt_ids(request.run_id, request.node, request.attempt).traceparent})
        if config.otlp_endpoint:
            env.append({"name": OTLP_TRACES_ENV, "value": config.otlp_endpoint})
    merged = {**config.env, **extra}
    env.extend({"name": k, "value": merged[k]} for k in sorted(merged) if k not in RESERVED_ENV)
    return env


def step_labels(owner: Owner, request: StepRequest, name: str) -> dict[str, str]:
    """The labels of the pod of ``request`` (see :mod:`agentflow.k8s.names`)."""
    return {
        names.WORKFLOW_LABEL: names.label_value(owner.name),
        names.RUN_LABEL: names.label_value(owner.uid),
        names.STEP_LABEL: names.label_value(request.step),
        names.NODE_LABEL: names.node_label(request.node),
        names.ATTEMPT_LABEL: str(request.attempt),
        names.POD_LABEL: name,
        names.MANAGED_BY_LABEL: names.MANAGED_BY,
        names.COMPONENT_LABEL: names.COMPONENT_STEP,
    }


def build_step_pod(
    owner: Owner,
    namespace: str,
    request: StepRequest,
    config: PodConfig,
    *,
    runtime_class: str | None = None,
    timeout_seconds: float | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    extra_labels: Mapping[str, str] | None = None,
    isolated: bool = False,
    own_policy: bool = False,
) -> dict[str, Any]:
    """The complete v1 Pod of one attempt. ``runtime_class`` None: ``config.default_runtime_class``.

    ``resources`` overrides single requests/limits of the config; ``env`` (a profile's grants) is added after
    ``config.env``; ``extra_labels`` never replace the AgentFlow labels. ``isolated``: the pod's egress is
    restricted, labelled ``agentflow.dev/isolated=true`` for the namespace's baseline NetworkPolicy
    (agentflow.k8s.netpol); only then does it carry that label. ``own_policy``: it has a NetworkPolicy of its
    own, named like it (annotated, so it is deleted with the pod).
    """
    name = pod_name(owner.name, request.node, request.attempt)
    labels = {**{k: v for k, v in (extra_labels or {}).items() if k != names.ISOLATED_LABEL},
              **step_labels(owner, request, name)}
    if isolated:
        labels[names.ISOLATED_LABEL] = "true"
    uid = config.run_as_user
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    runtime = runtime_class or config.default_runtime_class
    if runtime:
        spec["runtimeClassName"] = runtime
    if timeout_seconds is not None:
        spec["activeDeadlineSeconds"] = math.ceil(timeout_seconds) + DEADLINE_GRACE_SECONDS
    spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec["containers"] = [{
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": ["step"],
        "env": _env(request, config, env or {}),
        "resources": _resources(config, resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "agentflow-token", "mountPath": TOKEN_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }]
    lifetime = MIN_TOKEN_SECONDS if timeout_seconds is None else max(
        MIN_TOKEN_SECONDS, math.ceil(timeout_seconds) + DEADLINE_GRACE_SECONDS)
    spec["volumes"] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
        {"name": "agentflow-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": config.token_audience, "expirationSeconds": min(lifetime, 48 * 3600), "path": "token"}}]}},
    ]
    annotations = {names.NODE_ANNOTATION: request.node, names.IDEMPOTENCY_ANNOTATION: request.idempotency_key}
    if own_policy:
        annotations[names.NETWORK_POLICY_ANNOTATION] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


_SERVER_DEFAULTS: Final = frozenset({"defaultMode"})
"""Volume fields the API server fills in when a pod is created (``projected``, ``secret`` and ``configMap``
volumes get ``defaultMode: 420``): the pod read back must fingerprint as the pod that was sent."""


def _without_defaults(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_defaults(v) for k, v in value.items() if k not in _SERVER_DEFAULTS}
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value


def fingerprint(pod: Mapping[str, Any]) -> str:
    """A digest of what a pod runs and with which identity: its containers (name, image, command, args, mounts,
    privilege), its service account, RuntimeClass and host namespaces, and its volumes.

    The reconciler records it with the attempt when it creates the pod. A pod found under the attempt's name
    later (after a restart of the operator) is taken as the attempt's only if its fingerprint is the one
    recorded: a tenant who made a pod of that name first cannot have it act for the attempt. Fields the API
    server fills in are left out or normalised.
    """
    spec = pod.get("spec") or {}

    def container(c: Mapping[str, Any]) -> list[Any]:
        mounts = sorted((str(m.get("name")), str(m.get("mountPath"))) for m in c.get("volumeMounts") or [])
        security = c.get("securityContext") or {}
        return [c.get("name"), c.get("image"), c.get("command") or [], c.get("args") or [], mounts,
                bool(security.get("privileged")), bool(security.get("allowPrivilegeEscalation", True))]

    digest = {
        "containers": [container(c) for c in spec.get("containers") or []],
        "initContainers": [container(c) for c in spec.get("initContainers") or []],
        "serviceAccountName": spec.get("serviceAccountName") or "default",
        "runtimeClassName": spec.get("runtimeClassName"),
        "host": [bool(spec.get(k)) for k in ("hostNetwork", "hostPID", "hostIPC")],
        "volumes": sorted(json.dumps(_without_defaults(v), sort_keys=True) for v in spec.get("volumes") or []),
    }
    return hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()
