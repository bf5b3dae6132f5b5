"""An operator with its admission webhooks on, for the e2e modules that need one (validation, Budgets,
approvals, the platform's egress deny-list).

kopf writes the ValidatingWebhookConfiguration and MutatingWebhookConfiguration ``agentflow.dev`` with
``https://<webhook host>:<port>``, so the API server calls this process. The webhook host is an address
of this machine the API server reaches: 127.0.0.1 on the local cluster (its API server runs here), else
AGENTFLOW_E2E_WEBHOOK_HOST (default: the pod-reachable host address).

The configurations are cluster-wide and their webhooks fail closed (kopf writes ``failurePolicy: Fail``):
while they point at a dead port, no Workflow can be created or changed anywhere in the cluster. kopf
removes its webhooks when the operator stops normally (on SIGTERM) but leaves the objects; an operator
that is killed leaves them in place. So :func:`admission_operator` stops the operator with SIGTERM and
then deletes both configurations, whatever happened; only one such operator runs at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster
from .test_operator import Operator, free_port

CONFIG = "agentflow.dev"  # the configurations kopf manages (settings.admission.managed)
KINDS = "workflows.agentflow.dev,agents.agentflow.dev,promptversions.agentflow.dev,toolpolicies.agentflow.dev," \
        "budgets.agentflow.dev,workflowschedules.agentflow.dev,workflowtemplates.agentflow.dev," \
        "workflowtriggers.agentflow.dev,promptrollouts.agentflow.dev"


def webhooks(cluster: Cluster) -> list[dict[str, Any]] | None:
    """The webhooks of the managed ValidatingWebhookConfiguration; None when it does not exist."""
    got = cluster.kubectl("get", "validatingwebhookconfiguration", CONFIG, "-o", "json", check=False)
    return json.loads(got.stdout).get("webhooks") or [] if got.returncode == 0 else None


def drain(cluster: Cluster, namespace: str, op: Operator) -> None:
    """Delete a namespace's AgentFlow objects while the operator runs: it removes their finalizers (without
    it, the namespace would stay Terminating)."""
    if op.proc is not None and op.proc.poll() is None:
        cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False,
                        timeout=150)


@contextlib.contextmanager
def admission_operator(cluster: Cluster, dsn: str, log: Path, namespace: str,
                       extra_args: Sequence[str] = ()) -> Iterator[Operator]:
    """An operator watching ``namespace`` (a name or a glob) with its webhooks, until the block ends."""
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    hook_host = os.environ.get("AGENTFLOW_E2E_WEBHOOK_HOST") or ("127.0.0.1" if cluster.local else host)
    existing = webhooks(cluster)
    if existing:
        urls = [w["clientConfig"].get("url") for w in existing]
        pytest.skip(f"ValidatingWebhookConfiguration {CONFIG} is in use (webhooks at {urls}): another operator "
                    "serves admission on this cluster; running a second one would take it over")
    port = free_port(hook_host)
    op = Operator(cluster, dsn, host, log, extra_args=[
        "--namespace", namespace, "--webhook-host", hook_host, "--webhook-listen", f"{hook_host}:{port}",
        *extra_args])
    try:
        op.start()
        url = f"https://{hook_host}:{port}/validate-workflows"
        cluster.wait_until(f"kopf to point the webhooks at {url}", lambda: any(
            w["clientConfig"].get("url") == url for w in webhooks(cluster) or []), timeout=60)
        yield op
    finally:
        if "*" not in namespace:
            drain(cluster, namespace, op)
        op.stop()  # SIGTERM: kopf removes its webhooks
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, CONFIG, "--ignore-not-found", check=False)
