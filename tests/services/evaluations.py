"""The example evaluation suites (examples/manifests/prompt-rollout.yaml) as the evaluation tests read them, and
their evaluation Workflow driven to its end by the local runner (the engine the operator drives too, the offline
model): a real journal of a real evaluation, for the unit, integration and e2e tests of
agentflow.k8s.evaluation and agentflow.services.evaluations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from agentflow.engine.journal import Record
from agentflow.k8s import evaluation as ev
from agentflow.models import Catalog, Workflow, parse_resource
from agentflow.runner import session
from agentflow.runner.store import RunStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "manifests" / "prompt-rollout.yaml"
FAILING = ("output.category == 'billing'", "output.category == 'shipping'")
"""The edit of EXAMPLE that makes ticket-triage-v1's suite fail (one of its two cases)."""


def documents(text: str | None = None) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text if text is not None else EXAMPLE.read_text()) if d]


def catalog(text: str | None = None) -> Catalog:
    """The example's resources but its Workflows, each with a uid (uid-NAME) as read from a cluster."""
    out = Catalog()
    for doc in documents(text):
        if doc.get("kind") != "Workflow":
            doc.setdefault("metadata", {}).setdefault("uid", f"uid-{doc['metadata']['name']}")
            out.add(parse_resource(doc))  # type: ignore[arg-type]
    return out


def prompt_body(name: str, text: str | None = None, namespace: str = "team-a") -> dict[str, Any]:
    """PromptVersion ``name`` of the example as the API server returns it."""
    for doc in documents(text):
        if doc["kind"] == "PromptVersion" and doc["metadata"]["name"] == name:
            doc["metadata"].update(namespace=namespace, uid=f"uid-{name}")
            return doc
    raise KeyError(name)


def run_as_workflow(cat: Catalog, name: str, state: Path) -> list[Record]:
    """PromptVersion ``name``'s evaluation Workflow driven to its end by the local runner; its journal."""
    return asyncio.run(drive_as_workflow(cat, name, state))


async def drive_as_workflow(cat: Catalog, name: str, state: Path) -> list[Record]:
    """:func:`run_as_workflow` in a running event loop."""
    workflow = Workflow.model_validate(ev.workflow_body(cat.prompts[name], "default", ""))
    full = Catalog(dict(cat.agents), {**cat.prompts, **ev.judge_prompts()}, dict(cat.policies), dict(cat.budgets))
    bundle = session.Bundle(workflow, full, "")
    run_dir = session.create_run(RunStore(state), bundle, [])
    executor = session.make_executor(bundle, "inprocess", {"AGENTFLOW_MODEL_MODE": "offline"}, state_dir=state)
    await session.drive(run_dir, bundle, executor)
    return run_dir.read_records()
