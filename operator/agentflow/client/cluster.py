"""AsyncClient: runs of templates on a cluster, as Workflows in one namespace, through the one Kubernetes client
(agentflow.k8s.kube).

``start`` reads the template (a WorkflowTemplate of the namespace, or a ClusterWorkflowTemplate), checks the
inputs against it with the validation the admission webhook and the reconciler use (so a bad input is an
InputError naming the field before anything is created), then creates a Workflow that names the template and
gives only the inputs. The API server and the operator stay the judges: the webhook may still refuse it (a hard
Budget, a quota: RunRefused) and the operator resolves the template itself. Progress is read from the Workflow's
status, which the operator writes; whoever the client authenticates as needs get and create on workflows (and
get on the template's kind) in the namespace, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..k8s.kube import Forbidden, Invalid, Kube, KubeClient, KubeError, NotFound
from ..models import AnyTemplate, ManifestError, TemplateKind, parse_resource
from ..models.template import ClusterWorkflowTemplate, WorkflowTemplate
from ..services import approvals
from ..validation.templates import template_input_findings
from .bodies import check_body, run_name, template_ref, workflow_body
from .errors import ClientError, RunExists, RunNotFound, RunRefused, TemplateNotFound, from_admission, from_findings
from .handle import RunHandle
from .runs import RunResult, result_of_status

__all__ = ["AsyncClient"]

_PLURALS = {"WorkflowTemplate": "workflowtemplates", "ClusterWorkflowTemplate": "clusterworkflowtemplates"}
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _connect(kubeconfig: str | None, namespace: str | None) -> tuple[KubeClient, str]:
    """In a pod (and no kubeconfig named): its service account and namespace; else the kubeconfig's context."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and _SERVICE_ACCOUNT_NAMESPACE.exists():
        kube = KubeClient.from_environment()
        return kube, namespace or _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        kube, current = KubeClient.from_kubeconfig(kubeconfig)
    except KubeError as exc:
        raise ClientError(str(exc)) from None
    return kube, namespace or current


class AsyncClient:
    """Start runs of templates on a cluster and follow them.

    ``namespace``: where runs are created (default: the kubeconfig context's, or the pod's own);
    ``kubeconfig``: a kubeconfig file (default: in a pod its service account, else KUBECONFIG or ~/.kube/config);
    ``kube``: a Kube of your own (tests: agentflow.testing.FakeKube), then ``namespace`` is required;
    ``poll_seconds``: how often a run's status is read while waiting or streaming.
    """

    def __init__(self, namespace: str | None = None, *, kubeconfig: str | None = None, kube: Kube | None = None,
                 poll_seconds: float = 1.0) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds: expected a positive number of seconds, got {poll_seconds!r}")
        if kube is None:
            kube, namespace = _connect(kubeconfig, namespace)
            self._owns_kube = True
        elif not namespace:
            raise ValueError("namespace: required with kube")
        else:
            self._owns_kube = False
        self.kube: Kube = kube
        self.namespace: str = str(namespace)
        self.poll_seconds = poll_seconds

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Kubernetes client it built (not one it was given)."""
        if self._owns_kube:
            self.kube.close()

    async def template(self, name: str, kind: TemplateKind = "WorkflowTemplate") -> AnyTemplate:
        """The template a run would be made from; TemplateNotFound, or ClientError when it cannot be read."""
        ref = template_ref(name, kind)
        plural = _PLURALS[ref.kind]
        where = "the cluster" if ref.kind == "ClusterWorkflowTemplate" else f"namespace {self.namespace}"
        try:
            if ref.kind == "ClusterWorkflowTemplate":
                body = await self.kube.get_cluster_resource(plural, ref.name)
            else:
                body = await self.kube.get_resource(plural, self.namespace, ref.name)
        except NotFound:
            raise TemplateNotFound(ref.name, ref.kind, f"no {ref.kind} {ref.name!r} in {where}") from None
        except Forbidden as exc:  # RBAC: this identity may not read it, so may not start it either
            raise RunRefused(f"cannot read {ref.kind} {ref.name!r} in {where}: {exc}") from None
        except KubeError as exc:
            raise ClientError(f"cannot read {ref.kind} {ref.name!r} in {where}: {exc}") from None
        try:
            template = parse_resource(body)
        except ManifestError as exc:
            raise ClientError(f"{ref.kind} {ref.name!r} is not valid: {exc}") from None
        assert isinstance(template, WorkflowTemplate | ClusterWorkflowTemplate)
        return template

    async def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
                    kind: TemplateKind = "WorkflowTemplate", labels: Mapping[str, str] | None = None) -> RunHandle:
        """Start a run of ``template`` (of ``kind``) with ``inputs``; its handle. ``name``: the Workflow's (default:
        the template's name and 6 random hex digits). TemplateNotFound, InputError (the field named), RunRefused
        (the webhook, RBAC, or a run of that name exists)."""
        inputs = dict(inputs or {})
        ref = template_ref(template, kind)
        found = await self.template(ref.name, ref.kind)
        findings = template_input_findings(found, inputs)
        if findings:
            raise from_findings(findings, template=ref.name, kind=ref.kind)
        body = workflow_body(ref, inputs, name or run_name(ref.name), self.namespace, labels)
        check_body(body)
        try:
            created = await self.kube.create_resource("workflows", self.namespace, body)
        except (Invalid, Forbidden) as exc:
            raise from_admission(str(exc).replace("\\n", "\n"), template=ref.name, kind=ref.kind) from None
        except KubeError as exc:
            raise ClientError(f"cannot create Workflow {self.namespace}/{body['metadata']['name']}: {exc}") from None
        if not created:
            raise RunExists(body["metadata"]["name"], f"name: a Workflow {self.namespace}/{body['metadata']['name']} "
                            "exists already; give another name")
        return RunHandle(body["metadata"]["name"], self)

    async def get(self, name: str) -> RunHandle:
        """The handle of an existing run (any Workflow of the namespace); RunNotFound."""
        await self.look(name)
        return RunHandle(name, self)

    # -- Source

    async def look(self, run: str) -> RunResult:
        try:
            body = await self.kube.get_resource("workflows", self.namespace, run)
        except NotFound:
            raise RunNotFound(f"no Workflow {run!r} in namespace {self.namespace}") from None
        except KubeError as exc:
            raise ClientError(f"cannot read Workflow {self.namespace}/{run}: {exc}") from None
        return result_of_status(run, body.get("status"))

    async def cancel(self, run: str, reason: str) -> None:
        """Set spec.cancel (the operator records who: the API server's user; ``reason`` is not kept on a
        cluster)."""
        try:
            await approvals.cancel(self.kube, self.namespace, run)
        except approvals.ApprovalError as exc:
            raise ClientError(str(exc)) from None
        except KubeError as exc:
            raise ClientError(f"cannot cancel Workflow {self.namespace}/{run}: {exc}") from None

