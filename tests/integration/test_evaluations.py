"""PromptVersion evaluations on a cluster, against a real PostgreSQL: the evaluation Workflow's journal (the real
Workflow driven to its end by the local runner, offline model) is stored as the operator stores journals;
EvaluationSync concludes it from there, stores the verdict and its cases once, and they go with the run."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from agentflow.k8s import evaluation as ev
from agentflow.services.evaluations import EvaluationSync
from agentflow.storage import PostgresStore
from agentflow.testing import FakeKube
from services.evaluations import EXAMPLE, FAILING, catalog, drive_as_workflow, prompt_body

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")


async def evaluate(kube: FakeKube, store: PostgresStore, name: str, namespace: str) -> dict[str, Any] | None:
    body = await kube.get_resource("promptversions", namespace, name)
    return await EvaluationSync(kube, store, lambda: 1_800_000_000.0).sync(body)


@pytest.mark.parametrize(("name", "text", "phase"), [
    ("ticket-triage-v2", None, "Passed"),
    ("ticket-triage-v1", EXAMPLE.read_text().replace(*FAILING),
     "Failed"),
])
async def test_an_evaluation_is_concluded_from_the_journal_and_stored_once(
        store: PostgresStore, tmp_path: Path, name: str, text: str | None, phase: str) -> None:
    namespace = f"team-{uuid.uuid4().hex[:8]}"
    body = prompt_body(name, text, namespace)
    kube = FakeKube(body)
    pending = await evaluate(kube, store, name, namespace)
    assert pending is not None and pending["phase"] == "Pending"
    workflow = kube.resources[("workflows", namespace, pending["workflow"])]
    uid = str(uuid.uuid4())
    workflow["metadata"]["uid"] = uid
    await store.append(uid, await drive_as_workflow(catalog(text), name, tmp_path))
    workflow["status"] = {"phase": "Succeeded", "finishedAt": "2027-01-15T08:05:00Z"}

    status = await evaluate(kube, store, name, namespace)
    assert status is not None and status["phase"] == phase
    (stored,) = await store.evaluations(namespace, name)
    assert stored["runUid"] == uid and stored["workflow"] == pending["workflow"] and stored["trigger"] == ""
    assert stored["passed"] is (phase == "Passed") and stored["passRate"] == status["passRate"]
    assert stored["inputTokens"] == status["inputTokens"] > 0
    cases = await store.evaluation_cases(uid)
    suite = catalog(text).prompts[name].spec.evaluations
    assert suite is not None and [c["name"] for c in cases] == [c.name for c in suite.cases]
    assert sum(c["passed"] for c in cases) == status["passedCases"]
    assert all(c["assertions"] and "output" in c for c in cases)

    # Concluding again (another replica, a replayed watch event) stores nothing twice.
    kube.resources[("promptversions", namespace, name)]["status"]["evaluation"]["phase"] = "Running"
    await evaluate(kube, store, name, namespace)
    assert len(await store.evaluations(namespace, name)) == 1
    # The rows go with the Workflow's run (its PromptVersion deleted: owner references delete the Workflow).
    await store.delete_run(uid)
    assert await store.evaluations(namespace, name) == [] and await store.evaluation_cases(uid) == []
    assert ev.EVALUATION_LABEL in workflow["metadata"]["labels"]
