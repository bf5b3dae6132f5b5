"""`agentflow prompt eval NAME --cluster`: sets agentflow.dev/evaluate to a new value, waits for the operator's
verdict on status.evaluation and prints it (exit 0 Passed, 1 otherwise); bad requests exit 2 naming what is
wrong. The operator's side is the real EvaluationSync over a FakeKube, with the journal of the real evaluation
Workflow (tests/services/evaluations.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.engine.journal import Record
from agentflow.k8s import evaluation as ev
from agentflow.k8s.kube import KubeClient
from agentflow.services.evaluations import EvaluationSync
from agentflow.testing import FakeKube, MemoryStore
from services.evaluations import EXAMPLE, FAILING, catalog, prompt_body, run_as_workflow

NS = "team-a"


class OperatedKube(FakeKube):
    """A cluster whose operator evaluates at once: a patched PromptVersion's suite runs to its end (the journal
    given) before the patch returns."""

    def __init__(self, body: Mapping[str, Any], journal: list[Record]) -> None:
        super().__init__(body)
        self.journal = journal
        self.store = MemoryStore()

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await super().patch_resource(plural, namespace, name, patch)
        if plural != "promptversions":
            return
        sync = EvaluationSync(self, self.store, lambda: 1_800_000_000.0)
        status = await sync.sync(await self.get_resource(plural, namespace, name)) or {}
        workflow = self.resources.get(("workflows", namespace, str(status.get("workflow"))))
        if workflow is not None:
            workflow["status"] = {"phase": "Succeeded"}
            self.store.journals[workflow["metadata"]["uid"]] = self.journal
            await sync.sync(await self.get_resource(plural, namespace, name))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")


def cluster(monkeypatch: pytest.MonkeyPatch, kube: FakeKube) -> None:
    monkeypatch.setattr(KubeClient, "from_kubeconfig", classmethod(lambda cls, path=None: (kube, NS)))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["prompt", "eval", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_operator_runs_it_and_the_verdict_is_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    kube = OperatedKube(prompt_body("ticket-triage-v2"), run_as_workflow(catalog(), "ticket-triage-v2", tmp_path))
    cluster(monkeypatch, kube)
    code, out, err = run(capsys, "ticket-triage-v2", "--cluster", "--timeout", "5")
    assert code == 0, err
    assert f"PromptVersion {NS}/ticket-triage-v2: evaluation Passed" in out and "pass rate 100% (3/3)" in out
    annotation = dict(kube.resources[("promptversions", NS, "ticket-triage-v2")]["metadata"]["annotations"])
    assert annotation[ev.EVALUATE_ANNOTATION]  # a new value: the operator's cue
    code, out, _ = run(capsys, "ticket-triage-v2", "--cluster", "--json", "--timeout", "5")
    body = json.loads(out)
    assert code == 0 and body["phase"] == "Passed" and body["trigger"] != annotation[ev.EVALUATE_ANNOTATION]


def test_a_failed_suite_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE.read_text().replace(*FAILING)
    cluster(monkeypatch, OperatedKube(prompt_body("ticket-triage-v1", text),
                                      run_as_workflow(catalog(text), "ticket-triage-v1", tmp_path)))
    code, out, _ = run(capsys, "ticket-triage-v1", "--cluster", "--timeout", "5")
    assert code == 1 and "evaluation Failed" in out and "below minPassRate" in out


def test_no_operator_within_the_timeout_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cluster(monkeypatch, FakeKube(prompt_body("ticket-triage-v1")))
    code, out, _ = run(capsys, "ticket-triage-v1", "--cluster", "--timeout", "0.01")
    assert code == 1 and "evaluation Pending" in out and "not taken the request up yet" in out


def test_no_wait_only_asks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(prompt_body("ticket-triage-v1"))
    cluster(monkeypatch, kube)
    code, out, _ = run(capsys, "ticket-triage-v1", "--cluster", "--no-wait")
    assert code == 0 and "requested; the operator runs it as Workflow ticket-triage-v1-eval-" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["nope", "--cluster"], f"no PromptVersion 'nope' in namespace '{NS}'"),
    (["ticket-triage-v1", "--cluster", "-f", str(EXAMPLE)], "-f is for local runs"),
    (["ticket-triage-v1", "--cluster", "--timeout", "0"], "--timeout: give a number of seconds above 0"),
    (["ticket-triage-v1", "-n", NS, "-f", str(EXAMPLE)], "--namespace, --kubeconfig and --no-wait are for --cluster"),
    (["ticket-triage-v1"], "-f: give the manifests"),
])
def test_bad_requests_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                             argv: list[str], message: str) -> None:
    cluster(monkeypatch, FakeKube(prompt_body("ticket-triage-v1")))
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_a_prompt_without_a_suite_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    body = prompt_body("ticket-triage-v1")
    del body["spec"]["evaluations"]
    cluster(monkeypatch, FakeKube(body))
    code, _, err = run(capsys, "ticket-triage-v1", "--cluster")
    assert code == 2 and "has no spec.evaluations: nothing to run" in err
