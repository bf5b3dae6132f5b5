"""PromptVersion evaluations on a cluster, against a real PostgreSQL: the evaluation Workflow's journal (the real
Workflow driven to its end by the local runner, offline model) is stored as the operator stores journals;
EvaluationSync concludes it from there, stores the verdict and its cases once, and they go with the run."""

from __future__ import annotations

import json
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


def test_cases_from_the_operators_runs(postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`agentflow prompt cases --postgres-dsn -n NS --run WORKFLOW`: a run of the prompt-rollout example (the local
    runner) stored as the operator stores runs; its triage step's inputs become a case."""
    from agentflow.cli import main
    from agentflow.runner.store import RunStore
    from agentflow.storage.attempts import AttemptPod

    assert main(["--state-dir", str(tmp_path), "run", str(EXAMPLE), "--input", "ticket=refund me", "--json"]) == 0
    capsys.readouterr()
    (info,) = RunStore(tmp_path).list_runs()
    run = RunStore(tmp_path).open(info.run_id)
    namespace, uid = f"team-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())

    async def store_it() -> None:
        async with await PostgresStore.connect(postgres_dsn) as pg:
            await pg.migrate()
            await pg.append(uid, run.read_records())
            await pg.put_attempt(uid, "triage", 1, {"request": {}, "manifests": run.manifests_yaml,
                                                    "workflow": "prompt-rollout"},
                                 pod=AttemptPod(namespace, "prompt-rollout", f"prompt-rollout-{uid[:8]}-triage-1"))

    import asyncio

    asyncio.run(store_it())
    version = run.meta["prompts"]["triage"]["name"]
    code = main(["prompt", "cases", version, "--postgres-dsn", postgres_dsn, "-n", namespace, "--run",
                 "prompt-rollout", "--json", "--expect-output"])
    out = capsys.readouterr()
    assert code == 0, out.err
    (case,) = json.loads(out.out)["cases"]
    assert case["name"] == "prompt-rollout/triage" and case["inputs"] == {"ticket": "refund me"}
    assert case["assertions"][0]["equals"]["category"]
    code = main(["prompt", "cases", version, "--postgres-dsn", postgres_dsn, "-n", f"other-{namespace}", "--run",
                 "prompt-rollout"])
    assert code == 2 and "no run of Workflow 'prompt-rollout'" in capsys.readouterr().err
