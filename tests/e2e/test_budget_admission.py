"""Admission by budget through the real API server: `kubectl apply` of a Workflow whose cost preflight does
not fit a hard Budget is refused with the estimate and what is left; under a soft Budget it is admitted and
kubectl prints the Warning.

The operator runs on this machine with its admission webhook (as in test_operator_admission.py, whose
fixture pattern and cleanup this follows: the webhook configuration is cluster-wide and fails closed, so
the operator is stopped with SIGTERM and both configurations are deleted whatever happened). Its budget
ledger is the session's PostgreSQL. The Workflows are created suspended: admission is what is tested, not
the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .admission import admission_operator
from .conftest import Cluster
from .test_operator import Operator
from .test_operator_admission import API, write

pytestmark = pytest.mark.e2e

DENIED = 'admission webhook "budget-workflows.agentflow.dev" denied the request'


def resources() -> list[dict[str, Any]]:
    agent = {"apiVersion": API, "kind": "Agent", "metadata": {"name": "writer"},
             "spec": {"role": "technical writer", "model": {"name": "openai/gpt-4o-mini", "maxTokens": 1000}}}
    prompt = {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": "brief-v1"},
              "spec": {"prompt": "brief", "version": "1",
                       "messages": [{"role": "user", "content": "Write a brief on ${{ inputs.topic }}"}]}}
    capped = {"apiVersion": API, "kind": "Budget", "metadata": {"name": "capped"},
              "spec": {"scope": {"workflowSelector": {"matchLabels": {"tier": "capped"}}},
                       "limits": {"usd": 0.0001}, "enforcement": "hard", "period": "monthly"}}
    watched = {"apiVersion": API, "kind": "Budget", "metadata": {"name": "watched"},
               "spec": {"scope": {"workflowSelector": {"matchLabels": {"tier": "watched"}}},
                        "limits": {"usd": 0.0001}, "enforcement": "soft", "period": "monthly"}}
    return [agent, prompt, capped, watched]


def brief(name: str, tier: str) -> dict[str, Any]:
    """One llm step: gpt-4o-mini with maxTokens 1000 is about $0.0006 expected, over either $0.0001 budget."""
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name, "labels": {"tier": tier}},
            "spec": {"suspend": True, "inputs": {"topic": "feature flags"}, "steps": [
                {"name": "write", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "brief-v1"},
                 "inputs": {"topic": "${{ inputs.topic }}"}}]}}


@pytest.fixture(scope="module")
def budget_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-budget-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def budget_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                    budget_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with admission_operator(cluster, postgres_dsn, tmp_path_factory.mktemp("budget-admission") / "operator.log",
                            budget_namespace) as op:
        yield op


def test_over_a_hard_budget_is_refused_and_under_a_soft_one_is_admitted_with_a_warning(
        cluster: Cluster, budget_operator: Operator, budget_namespace: str, tmp_path: Path) -> None:
    ns = budget_namespace
    cluster.apply(resources(), ns)
    capped = write(tmp_path, "capped", [brief("capped", "capped")])
    # The webhook reads Budgets from the operator's index, a watch event behind the API server.
    cluster.wait_until("the Budget in the operator's index", lambda: DENIED in cluster.kubectl(
        "apply", "--dry-run=server", "-n", ns, "-f", str(capped), check=False).stderr, timeout=60)

    refused = cluster.kubectl("apply", "-n", ns, "-f", str(capped), check=False)
    assert refused.returncode != 0, refused.stdout
    message = " ".join(refused.stderr.split())
    assert DENIED in message
    assert "Workflow/capped: estimated cost $0.000" in message and "(low $" in message and "high $" in message
    assert f"Budget {ns}/capped (hard), window from " in message
    assert "left of $0.000100 (spent $0.000000, reserved $0.000000)" in message
    assert "agentflow cost FILE.yaml" in message
    gone = cluster.kubectl("get", "workflows.agentflow.dev", "capped", "-n", ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr

    watched = write(tmp_path, "watched", [brief("watched", "watched")])
    admitted = cluster.kubectl("apply", "-n", ns, "-f", str(watched), check=False)
    assert admitted.returncode == 0, admitted.stderr
    warnings = [line for line in admitted.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1, admitted.stderr
    assert f"is more than Budget {ns}/watched (soft) has left" in warnings[0]
    assert "admitted because the budget is soft" in warnings[0]
    assert cluster.get_json("workflows.agentflow.dev", "watched", "-n", ns)["metadata"]["uid"]
