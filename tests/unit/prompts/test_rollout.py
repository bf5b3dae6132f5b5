"""Which version of a prompt family a run gets: the rollout state, the split by hash, pins, binding, and a run
keeping its version (RunStarted records it; resume, the stored manifests and the status show it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.plan import compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import EventType
from agentflow.k8s.status import workflow_status
from agentflow.models import Catalog, PromptRollout, PromptVersion, Workflow
from agentflow.prompts.rollout import (
    Choice,
    RolloutError,
    bind,
    bucket,
    choices_for,
    choose,
    planned_version,
    recorded,
    resolve,
    rollout_of,
    version_key,
)
from agentflow.runner import session
from agentflow.runner.progress import summary
from agentflow.runner.store import RunStore
from agentflow.validation.resources import check_resource

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "manifests" / "prompt-rollout.yaml"


def pv(name: str, family: str, version: str, canary: dict[str, Any] | None = None) -> PromptVersion:
    spec: dict[str, Any] = {"prompt": family, "version": version, "messages": [{"role": "user", "content": "hi"}]}
    if canary is not None:
        spec["canary"] = canary
    return PromptVersion.model_validate({"metadata": {"name": name}, "spec": spec})


def family(weight: int | None = 20) -> dict[str, PromptVersion]:
    canary = {"baseline": {"name": "t-v1"}, "weight": weight} if weight is not None else None
    versions = [pv("t-v1", "t", "1"), pv("t-v2", "t", "2", canary), pv("other", "o", "9")]
    return {p.metadata.name: p for p in versions}


def workflow(ref: dict[str, Any]) -> Workflow:
    return Workflow.model_validate({"metadata": {"name": "w"}, "spec": {"steps": [
        {"name": "a", "kind": "llm", "agentRef": {"name": "x"}, "promptRef": ref},
        {"name": "b", "kind": "llm", "agentRef": {"name": "x"}, "promptRef": {"name": "other"}}]}})


def test_version_labels_sort_numerically() -> None:
    labels = ["1.10", "1.9", "2", "1", "1.9.1", "1.0-rc1"]
    assert sorted(labels, key=version_key) == ["1", "1.0-rc1", "1.9", "1.9.1", "1.10", "2"]


def test_rollout_state() -> None:
    assert rollout_of("t", family(None).values()).stable == "t-v2"  # no canary: the highest version
    r = rollout_of("t", family(20).values())
    assert (r.stable, r.candidate, r.candidate_weight) == ("t-v1", "t-v2", 20)
    assert (r.weight("t-v1"), r.weight("t-v2"), r.role("t-v2"), r.role("x")) == (80, 20, "candidate", "inactive")


def test_rollout_errors_name_the_field() -> None:
    two = {**family(20), "t-v3": pv("t-v3", "t", "3", {"baseline": {"name": "t-v1"}, "weight": 5})}
    with pytest.raises(RolloutError, match=r"2 candidates .*t-v2, t-v3.*one PromptVersion of a family at a time"):
        rollout_of("t", two.values())
    cross = {**family(None), "t-v3": pv("t-v3", "t", "3", {"baseline": {"name": "other"}, "weight": 5})}
    with pytest.raises(RolloutError, match=r"spec.canary.baseline.name: 'other' is not a PromptVersion of family"):
        rollout_of("t", cross.values())
    with pytest.raises(RolloutError, match="no version '7'; versions: 1, 2"):
        resolve("t", "7", "run", family())


def test_the_split_is_by_hash_and_close_to_the_weight() -> None:
    assert bucket("run-1", "t") == bucket("run-1", "t") and 0 <= bucket("run-1", "t") < 100
    prompts = family(20)
    r = rollout_of("t", prompts.values())
    got = [choose(r, f"run-{i}", prompts) for i in range(4000)]
    share = sum(c.name == "t-v2" for c in got) / len(got)
    assert 0.17 < share < 0.23
    assert all((c.reason == "candidate") == (c.bucket is not None and c.bucket < 20) for c in got)
    assert {choose(rollout_of("t", family(0).values()), f"r{i}", prompts).name for i in range(200)} == {"t-v1"}
    assert {choose(rollout_of("t", family(100).values()), f"r{i}", family(100)).name for i in range(200)} == {"t-v2"}


def test_pins_and_plans() -> None:
    assert resolve("t", "1", "any", family()) == Choice("t", "t-v1", "1", "pinned")
    assert planned_version("t", None, family()) == "t-v1" and planned_version("t", "2", family()) == "t-v2"


def test_choices_are_kept_and_bound() -> None:
    w = workflow({"family": "t"})
    choices = choices_for(w, family(100), "run-1")
    assert choices == {"a": Choice("t", "t-v2", "2", "candidate", bucket("run-1", "t"))}
    kept = {"a": Choice("t", "t-v1", "1", "stable", 90)}
    assert choices_for(w, family(100), "run-1", kept) == kept  # what the run recorded wins over a new weight
    bound = bind(w, choices)
    assert bound.spec.steps[0].prompt_ref is not None and bound.spec.steps[0].prompt_ref.name == "t-v2"
    assert bound.spec.steps[1].prompt_ref is not None and bound.spec.steps[1].prompt_ref.name == "other"
    assert recorded({"prompts": {"a": choices["a"].to_dict()}}) == choices


def test_run_started_records_the_choice_and_resume_keeps_it() -> None:
    w = workflow({"family": "t"})
    choice = choices_for(w, family(100), "run-1")["a"]
    plan = compile_plan(bind(w, {"a": choice}), prompts={"a": choice.to_dict()})
    run = Run(plan, "run-1")
    events = run.decide(0.0).events
    assert events[0].type is EventType.run_started and events[0].data["prompts"]["a"]["name"] == "t-v2"
    later = compile_plan(w, prompts={"a": {**choice.to_dict(), "name": "t-v1"}})  # the weight changed since
    resumed = Run.resume(later, "run-1", events)
    assert resumed.prompts["a"]["name"] == "t-v2"
    status = workflow_status(resumed, now=1.0)
    assert status["prompts"] == {"a": {"family": "t", "name": "t-v2", "version": "2", "reason": "candidate"}}


def test_validation_names_the_field() -> None:
    catalog = Catalog(prompts=family())
    for ref, path, message in [
        ({"family": "nope"}, "family", "unknown prompt family 'nope'"),
        ({"family": "t", "version": "7"}, "version", "prompt family 't' has no version '7'"),
    ]:
        findings = check_resource(workflow(ref), catalog)
        assert [(p[-1], m.split(";")[0].split(" (")[0]) for p, m in findings
                if "promptRef" in p] == [(path, message)], findings
    with pytest.raises(ValueError, match="exactly one of name, family"):
        workflow({"name": "t-v1", "family": "t"})
    with pytest.raises(ValueError, match=r"version needs promptRef.family"):
        workflow({"name": "t-v1", "version": "1"})


def test_a_local_run_gets_its_version_and_keeps_it(tmp_path: Path) -> None:
    manifests = tmp_path / "m.yaml"
    manifests.write_text(EXAMPLE.read_text().replace("weight: 20", "weight: 100"))
    bundle = session.load_bundle([manifests])
    run_id = session.new_run_id("prompt-rollout")
    bound = session.bind_prompts(bundle, run_id)
    assert bound.prompts["triage"].name == "ticket-triage-v2"
    store = RunStore(tmp_path / "state")
    run_dir = session.create_run(store, bound, [manifests], run_id=run_id)
    executor = session.make_executor(bound, "inprocess", {"AGENTFLOW_MODEL_MODE": "offline"})
    import asyncio

    run = asyncio.run(session.drive(run_dir, bound, executor))
    assert run.phase == "Succeeded" and "summary" in run.nodes["triage"].output  # v2's outputSchema
    assert run.prompts["triage"]["name"] == "ticket-triage-v2"
    assert summary(run)["prompts"]["triage"]["reason"] == "candidate"  # what agentflow run --json / show print
    again = session.bundle_of(store.open(run_id))  # what resume and replay read
    step = again.workflow.spec.steps[0]
    assert step.prompt_ref is not None and step.prompt_ref.name == "ticket-triage-v2"
    assert again.prompts["triage"].reason == "candidate"
    assert session.load_run(store.open(run_id)).prompts["triage"]["name"] == "ticket-triage-v2"


def prompt_rollout(name: str = "t-rollout", weight: int | None = 30, phase: str = "Progressing",
                   generation: int = 2, observed: int = 2, **spec: Any) -> PromptRollout:
    body: dict[str, Any] = {"metadata": {"name": name, "generation": generation},
                            "spec": {"prompt": "t", "stable": "t-v1", "candidate": "t-v2",
                                     "steps": [{"weight": 10}, {"weight": 50}], **spec}}
    if weight is not None:
        body["status"] = {"observedGeneration": observed, "phase": phase, "weight": weight}
    return PromptRollout.model_validate(body)


def test_a_prompt_rollout_gives_the_weight_the_operator_reached() -> None:
    versions = family(None).values()
    r = rollout_of("t", versions, [prompt_rollout(weight=30)])
    assert (r.stable, r.candidate, r.candidate_weight) == ("t-v1", "t-v2", 30)
    # the spec's steps are not a weight: before the operator wrote one for this generation, the candidate gets 0
    assert rollout_of("t", versions, [prompt_rollout(weight=None)]).candidate_weight == 0
    assert rollout_of("t", versions, [prompt_rollout(weight=50, observed=1)]).candidate_weight == 0
    assert rollout_of("t", versions, [prompt_rollout(weight=0, phase="RolledBack")]).candidate_weight == 0
    promoted = rollout_of("t", versions, [prompt_rollout(weight=100, phase="Promoted")])
    assert (promoted.stable, promoted.candidate) == ("t-v2", None)
    # without the rollout, the highest version is stable again (a rolled-back candidate would come back)
    assert rollout_of("t", versions).stable == "t-v2"
    # a rollout of another family changes nothing here
    other = prompt_rollout(prompt="o", stable="other", candidate="other-2")
    assert rollout_of("t", versions, [other]).candidate is None


def test_runs_follow_the_rollout_weight() -> None:
    prompts = family(None)
    rollouts = {"t-rollout": prompt_rollout(weight=30)}
    got = [resolve("t", None, f"run-{i}", prompts, rollouts) for i in range(400)]
    share = sum(c.name == "t-v2" for c in got) / len(got)
    assert 0.22 < share < 0.38 and all(c.reason == ("candidate" if c.name == "t-v2" else "stable") for c in got)
    wf = workflow({"family": "t"})
    assert choices_for(wf, prompts, "run-1", None, rollouts)["a"] == resolve("t", None, "run-1", prompts, rollouts)
    assert planned_version("t", None, prompts, rollouts) == "t-v1"


def test_a_rollout_and_a_canary_or_two_rollouts_are_errors_naming_both() -> None:
    with pytest.raises(RolloutError, match=r"both PromptVersion 't-v2' with spec.canary and PromptRollout "
                                           r"'t-rollout'"):
        rollout_of("t", family(20).values(), [prompt_rollout()])
    with pytest.raises(RolloutError, match=r"2 PromptRollouts \(a, b\): one at a time"):
        rollout_of("t", family(None).values(), [prompt_rollout("a"), prompt_rollout("b")])
    with pytest.raises(RolloutError, match=r"PromptRollout 't-rollout' spec.candidate: 'nope' is not a "
                                           r"PromptVersion of family 't'"):
        rollout_of("t", family(None).values(), [prompt_rollout(candidate="nope")])


def test_validation_checks_a_rollouts_versions() -> None:
    catalog = Catalog()
    for p in family(None).values():
        catalog.add(p)
    good = prompt_rollout()
    catalog.add(good)
    assert check_resource(good, catalog) == []
    assert check_resource(good, None) == []
    bad = prompt_rollout("second", candidate="other")
    found = dict((".".join(map(str, path)), msg) for path, msg in check_resource(bad, catalog))
    assert "is of family 'o', not spec.prompt 't'" in found["spec.candidate"]
    assert "rolled out by PromptRollout 't-rollout' already" in found["spec.prompt"]
    missing = prompt_rollout("t-rollout", stable="t-v0")
    assert "unknown PromptVersion 't-v0'; PromptVersions of family 't': t-v1, t-v2" in dict(
        (".".join(map(str, p)), m) for p, m in check_resource(missing, catalog))["spec.stable"]
