"""`agentflow prompt eval|status` with the offline model: the example's suites pass, a failing suite exits 1
with the threshold it missed, results are stored in the state dir, bad input exits 2 naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.cli import main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "manifests" / "prompt-rollout.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["prompt", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")


def test_the_example_suite_passes_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", "ticket-triage-v2", "-f", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == 0, out
    assert "models: agentflow/offline" in out and "suite PASSED" in out
    assert "pass rate 100% (3/3)" in out and "pairwise" in out
    stored = json.loads((tmp_path / "evals" / "ticket-triage-v2" / "latest.json").read_text())
    assert stored["passed"] and stored["passRate"] == 1 and stored["winRate"] is not None
    assert {c["name"] for c in stored["cases"]} == {"refund", "parcel", "password"}
    judge = stored["cases"][2]["assertions"][1]
    assert judge["kind"] == "judge" and 0 <= judge["score"] <= 1
    assert all(c["tokens"] > 0 for c in stored["cases"])
    # the calls went through the gateway: the model calls are in the state dir's audit chain
    assert "model_call" in (tmp_path / "audit.jsonl").read_text()


def test_a_failing_suite_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE.read_text().replace("output.category == 'billing'", "output.category == 'shipping'")
    manifests = tmp_path / "m.yaml"
    manifests.write_text(text)
    code, out, _ = run(capsys, "eval", "ticket-triage-v1", "-f", str(manifests), "--state-dir", str(tmp_path),
                       "--json")
    body = json.loads(out)
    assert code == 1 and not body["passed"]
    assert body["failures"] == ["pass rate 50.00% is below minPassRate 100.00%"]
    (refund,) = [c for c in body["cases"] if c["name"] == "refund"]
    assert refund["assertions"][0] == {"kind": "cel", "passed": False, "score": 0.0, "detail": "false"}


def test_status_shows_the_split_and_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "eval", "ticket-triage-v1", "-f", str(EXAMPLE), "--state-dir", str(tmp_path))
    code, out, _ = run(capsys, "status", "ticket-triage", "-f", str(EXAMPLE), "--state-dir", str(tmp_path),
                       "--json")
    body = json.loads(out)
    assert code == 0
    assert (body["stable"], body["candidate"], body["candidateWeight"]) == ("ticket-triage-v1", "ticket-triage-v2",
                                                                            20)
    rows = {r["name"]: r for r in body["versions"]}
    assert rows["ticket-triage-v1"]["weight"] == 80 and rows["ticket-triage-v1"]["eval"]["passed"] is True
    assert rows["ticket-triage-v2"]["eval"] is None
    code, out, _ = run(capsys, "status", "ticket-triage-v2", "-f", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == 0 and "candidate ticket-triage-v2 at 20% of runs" in out and "not evaluated" in out


@pytest.mark.parametrize("latest", ['[]', '"text"', '{"evalId": "x"}',
                                    '{"evalId": "x", "passed": true, "passRate": "NaN", "meanScore": 1}'])
def test_status_takes_results_it_did_not_write_as_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       latest: str) -> None:
    folder = tmp_path / "evals" / "ticket-triage-v1"
    folder.mkdir(parents=True)
    (folder / "latest.json").write_text(latest)
    code, out, _ = run(capsys, "status", "ticket-triage", "-f", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == 0 and "not evaluated" in out


def test_eval_refuses_a_state_dir_it_cannot_keep_results_in_before_any_model_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "eval", "ticket-triage-v1", "-f", str(EXAMPLE), "--state-dir", str(tmp_path / "file"))
    assert code == 2 and "--state-dir" in err and "cannot keep results" in err
    (tmp_path / "s" / "evals").mkdir(parents=True)
    (tmp_path / "s" / "evals" / "ticket-triage-v1").write_text("x")
    code, _, err = run(capsys, "eval", "ticket-triage-v1", "-f", str(EXAMPLE), "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "cannot keep results" in err
    assert not (tmp_path / "s" / "audit.jsonl").exists()  # no model was called


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "eval", "nope", "-f", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == 2 and "no PromptVersion 'nope'" in err
    only_prompts = tmp_path / "p.yaml"
    only_prompts.write_text("---".join(d for d in EXAMPLE.read_text().split("---") if "kind: PromptVersion" in d))
    code, _, err = run(capsys, "eval", "ticket-triage-v1", "-f", str(only_prompts), "--state-dir", str(tmp_path))
    assert code == 2 and "spec.evaluations.agentRef.name: unknown Agent 'triage-agent'" in err


ROLLOUT = """
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptRollout
metadata: {name: triage-rollout, generation: 1}
spec:
  prompt: ticket-triage
  stable: ticket-triage-v1
  candidate: ticket-triage-v2
  steps: [{weight: 10, minRuns: 20}, {weight: 50, minRuns: 50}]
  onlineGates: [{signal: schemaFailureRate, maxDegradation: 0.02}]
status:
  observedGeneration: 1
  phase: RolledBack
  stepIndex: 0
  weight: 0
  candidateRuns: 24
  stableRuns: 210
  gates:
    - {signal: schemaFailureRate, verdict: Fail, candidateSamples: 120, stableSamples: 1100, candidate: 0.2,
       stable: 0.1, maxDegradation: 0.02, statistic: 2.31, pValue: 0.0104, alpha: 0.025,
       test: one-sided two-proportion z (Agresti-Caffo)}
  lastDecision: {action: Rollback, reason: GateFailed, at: "2026-12-06T10:00:00Z",
                 message: "step 1 of 2 at 10%: rolled back: schemaFailureRate fail"}
"""


def with_rollout(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    docs = [d for d in text.split("\n---\n")]
    docs = [d.replace("  canary:\n    baseline: {name: ticket-triage-v1}\n    weight: 20\n", "") for d in docs]
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join(docs) + ROLLOUT)
    return path


def test_status_explains_a_rollout_with_its_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifests = with_rollout(tmp_path)
    assert "canary:" not in manifests.read_text()
    code, out, err = run(capsys, "status", "ticket-triage", "-f", str(manifests), "--state-dir", str(tmp_path))
    assert code == 0, err
    assert "candidate ticket-triage-v2 at 0% of runs" in out
    assert "PromptRollout triage-rollout: ticket-triage-v1 -> ticket-triage-v2, steps 10% (minRuns 20), 50% " \
           "(minRuns 50)" in out
    assert "phase RolledBack, step 1 of 2, candidate weight 0%, runs this step: candidate 24, stable 210" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("schemaFailureRate"))
    assert line.split()[:8] == ["schemaFailureRate", "Fail", "0.2", "n=120", "0.1", "n=1100", "0.02", "2.31"]
    assert "0.0104" in line and "0.025" in line and "Agresti-Caffo" in line
    assert "last decision Rollback at 2026-12-06T10:00:00Z (GateFailed)" in out
    code, out, _ = run(capsys, "status", "ticket-triage", "-f", str(manifests), "--state-dir", str(tmp_path),
                       "--json")
    body = json.loads(out)
    assert body["rollout"]["status"]["gates"][0]["pValue"] == 0.0104 and body["candidateWeight"] == 0


def test_status_reads_the_manifests_or_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "ticket-triage")
    assert code == 2 and "give the manifests (-f) or the cluster (-n NAMESPACE / --kubeconfig)" in err
    code, _, err = run(capsys, "status", "ticket-triage", "-f", str(EXAMPLE), "-n", "team")
    assert code == 2 and "one of them" in err
    # the example has a fixed canary: a PromptRollout of the same family is an error naming both
    both = tmp_path / "both.yaml"
    both.write_text(EXAMPLE.read_text() + ROLLOUT)
    code, _, err = run(capsys, "status", "ticket-triage", "-f", str(both), "--state-dir", str(tmp_path))
    assert code == 2 and "ticket-triage-v2" in err and "triage-rollout" in err
    code, _, err = run(capsys, "status", "ticket-triage", "--kubeconfig", str(tmp_path / "none"))
    assert code == 2 and "cannot read the cluster: cannot use the kubeconfig" in err
