"""A PromptVersion's evaluation suite on a cluster: the Workflow that runs it, and the verdict from its journal.

Pure: the service (agentflow.services.evaluations) reads and writes; everything it decides is here::

    workflow_name(prompt, trigger) -> name          PROMPT-eval-HASH (of the PromptVersion's uid and the trigger)
    workflow_body(prompt, namespace, trigger)       the evaluation Workflow: EvaluationError names a bad field
    judge_prompts() -> {name: PromptVersion}        the built-in judge and pairwise prompts it refers to
    conclude(prompt, records) -> SuiteResult        the suite's verdict from the finished Workflow's journal
    evaluation_status(...) -> status patch          status.evaluation (phase, rates, cost, tokens, latency)

The suite is an ordinary Workflow, so each case is a step pod like any run's: sandboxed, its calls through the
gateway with the attempt's token, charged to the namespace's Budgets (those whose workflowSelector matches
its labels, and suite.budgetRef as its spec.budgetRef), journaled in PostgreSQL and published as events.
Its steps, for case ``i`` of spec.evaluations.cases::

    case-I              llm: the suite's Agent, promptRef.name the PromptVersion itself (pinned: no rollout)
    case-I-judge-J      llm: judge.agentRef with the built-in judge prompt, after case-I, for judge assertion J
    case-I-baseline     llm: the suite's Agent with judge.pairwiseAgainst, after case-I (pairwise only)
    case-I-pairwise     llm: the judge comparing the two outputs, after both (pairwise only)

Every step has continueOnFailure: one case failing never stops the others. A case's inputs are the
Workflow's spec.inputs (``cases[I]``), never templates: a ``${{`` in a case is text, as it is locally. What a
judge reads (the case's inputs as text, the rubric) is in spec.inputs as well; the output is the step's
(``steps['case-I'].output``), written into the judge's prompt as any value is (templates.stringify), as the
local driver writes it. The verdict is agentflow.prompts.suite's ``case_result`` and ``summarize``: the same
code as ``agentflow prompt eval`` locally.

The judge prompts are PromptVersions of the namespace named by a hash of their content
(``agentflow-judge-HASH``), created by the operator when missing and checked to be exactly the built-in ones
(spec is immutable; an object of that name with another spec is an Error, never used). Whoever may create
PromptVersions in a namespace decides its suites' thresholds anyway: what they can do to their own
evaluation there is no more than that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine.journal import Record
from ..engine.values import EventType
from ..models import EvaluationStatus, PromptVersion, Workflow, limits
from ..prompts import suite as suites

__all__ = [
    "EVALUATE_ANNOTATION", "EVALUATION_LABEL", "FINAL_PHASES", "PROMPT_ANNOTATION", "TRIGGER_ANNOTATION",
    "EvaluationError", "baseline_node", "case_node", "conclude", "evaluation_status", "judge_node", "judge_prompts",
    "label_value", "pairwise_node", "prompt_body", "same_spec", "workflow_body", "workflow_name",
]

EVALUATION_LABEL = "agentflow.dev/evaluation"
"""On an evaluation Workflow: the PromptVersion it evaluates (label_value of its name)."""
PROMPT_ANNOTATION = "agentflow.dev/evaluation-of"
"""On an evaluation Workflow: the PromptVersion's full name (a label value holds at most 63 characters)."""
EVALUATE_ANNOTATION = "agentflow.dev/evaluate"
"""On a PromptVersion: any new value runs its suite again (`agentflow prompt eval NAME --cluster`)."""
TRIGGER_ANNOTATION = "agentflow.dev/evaluate-trigger"
"""On an evaluation Workflow: the agentflow.dev/evaluate value it was started for."""
FINAL_PHASES = frozenset({"Passed", "Failed", "Error"})
_FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})
_JUDGE, _PAIRWISE = "agentflow-judge", "agentflow-pairwise"


class EvaluationError(ValueError):
    """The suite cannot run on the cluster (or be concluded); the message names the field or the step."""


def case_node(i: int) -> str:
    return f"case-{i}"


def judge_node(i: int, j: int) -> str:
    return f"case-{i}-judge-{j}"


def baseline_node(i: int) -> str:
    return f"case-{i}-baseline"


def pairwise_node(i: int) -> str:
    return f"case-{i}-pairwise"


def _digest(*parts: str, size: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:size]


def label_value(name: str) -> str:
    """A PromptVersion's name as a label value (at most 63 characters: a longer one is cut and hashed)."""
    if len(name) <= 63:
        return name
    return f"{name[:52].rstrip('.-_')}-{_digest(name)}"


def workflow_name(prompt: PromptVersion, trigger: str) -> str:
    """PROMPT-eval-HASH: the same PromptVersion (by uid) and trigger always name the same Workflow."""
    meta = prompt.metadata
    return f"{meta.name[:200].rstrip('.-')}-eval-{_digest(meta.uid or meta.name, trigger)}"


def judge_prompts() -> dict[str, PromptVersion]:
    """The built-in judge and pairwise PromptVersions, named by a hash of their spec (a new AgentFlow with other
    judge prompts makes new ones; nothing edits the old)."""
    out: dict[str, PromptVersion] = {}
    for family, make in ((_JUDGE, suites.judge_prompt), (_PAIRWISE, suites.pairwise_prompt)):
        spec = make(family).spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        name = f"{family}-{_digest(json.dumps(spec, sort_keys=True))}"
        prompt = make(name)
        out[name] = prompt.model_copy(update={"spec": prompt.spec.model_copy(update={"prompt": name})})
    return out


def _judge_names() -> tuple[str, str]:
    names = sorted(judge_prompts())
    judge = next(n for n in names if n.startswith(_JUDGE + "-"))
    pairwise = next(n for n in names if n.startswith(_PAIRWISE + "-"))
    return judge, pairwise


def prompt_body(prompt: PromptVersion, namespace: str) -> dict[str, Any]:
    """A built-in judge prompt as the object the operator creates."""
    body = prompt.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["metadata"] = {"name": prompt.metadata.name, "namespace": namespace,
                        "labels": {"app.kubernetes.io/managed-by": "agentflow"}}
    body.pop("status", None)
    return body


def same_spec(observed: Mapping[str, Any], expected: PromptVersion) -> bool:
    """Whether a PromptVersion read from the cluster has exactly the built-in spec."""
    try:
        return PromptVersion.model_validate(dict(observed)).spec == expected.spec
    except ValueError:
        return False


def _literal(key: str) -> str:
    return json.dumps(key)  # a CEL string literal: JSON's escapes are CEL's


def _llm(name: str, agent: str, prompt: str, inputs: dict[str, Any], after: Sequence[str]) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "kind": "llm", "agentRef": {"name": agent}, "promptRef": {"name": prompt},
                            "inputs": inputs, "continueOnFailure": True}
    if after:
        step["dependsOn"] = list(after)
    return step


def workflow_body(prompt: PromptVersion, namespace: str, trigger: str) -> dict[str, Any]:
    """The evaluation Workflow of ``prompt``'s suite, owned by the PromptVersion (see the module docstring)."""
    suite = prompt.spec.evaluations
    if suite is None:
        raise EvaluationError("spec.evaluations: the PromptVersion has no evaluation suite")
    steps_needed = sum(1 + sum(a.judge is not None for a in c.assertions) for c in suite.cases)
    pairwise = suite.judge is not None and suite.judge.pairwise_against is not None
    steps_needed += 2 * len(suite.cases) if pairwise else 0
    if steps_needed > limits.MAX_STEPS:
        raise EvaluationError(
            f"spec.evaluations.cases: the suite needs {steps_needed} steps on the cluster (a case, each judge "
            f"assertion and a pairwise comparison are one each; two for pairwise) and a Workflow holds at most "
            f"{limits.MAX_STEPS}: split the cases over several PromptVersions or run it locally")
    judge_prompt, pairwise_prompt = _judge_names()
    name = prompt.metadata.name
    agent = suite.agent_ref.name
    steps: list[dict[str, Any]] = []
    rubrics: list[list[str | None]] = []
    for i, case in enumerate(suite.cases):
        inputs = {k: f"${{{{ inputs.cases[{i}][{_literal(k)}] }}}}" for k in case.inputs}
        output = f"${{{{ steps['{case_node(i)}'].output }}}}"
        text = f"${{{{ inputs.texts[{i}] }}}}"
        steps.append(_llm(case_node(i), agent, name, inputs, ()))
        rubrics.append([a.judge.rubric if a.judge is not None else None for a in case.assertions])
        for j, assertion in enumerate(case.assertions):
            if assertion.judge is not None:
                assert suite.judge is not None  # the model refuses a judge assertion without the suite's judge
                steps.append(_llm(judge_node(i, j), suite.judge.agent_ref.name, judge_prompt, {
                    "rubric": f"${{{{ inputs.rubrics[{i}][{j}] }}}}", "inputs": text, "output": output},
                    (case_node(i),)))
        if pairwise:
            assert suite.judge is not None and suite.judge.pairwise_against is not None
            steps.append(_llm(baseline_node(i), agent, suite.judge.pairwise_against.name, inputs, (case_node(i),)))
            ours, theirs = output, f"${{{{ steps['{baseline_node(i)}'].output }}}}"
            a, b = (theirs, ours) if suites.pairwise_swapped(case.name) else (ours, theirs)
            steps.append(_llm(pairwise_node(i), suite.judge.agent_ref.name, pairwise_prompt, {
                "rubric": "${{ inputs.criteria }}", "inputs": text, "a": a, "b": b},
                (case_node(i), baseline_node(i))))
    spec_inputs: dict[str, Any] = {
        "cases": [dict(c.inputs) for c in suite.cases],
        "texts": [suites.judge_inputs("", c.inputs, None)["inputs"] for c in suite.cases],
        "rubrics": rubrics,
    }
    if suite.judge is not None:
        spec_inputs["criteria"] = suite.judge.criteria
    spec: dict[str, Any] = {"inputs": spec_inputs, "steps": steps}
    if suite.budget_ref is not None:
        spec["budgetRef"] = {"name": suite.budget_ref.name}
    metadata: dict[str, Any] = {
        "name": workflow_name(prompt, trigger), "namespace": namespace,
        "labels": {EVALUATION_LABEL: label_value(name), "app.kubernetes.io/managed-by": "agentflow"},
        "annotations": {PROMPT_ANNOTATION: name, TRIGGER_ANNOTATION: trigger},
    }
    if prompt.metadata.uid:
        metadata["ownerReferences"] = [{"apiVersion": prompt.api_version, "kind": prompt.kind, "name": name,
                                        "uid": prompt.metadata.uid, "controller": True}]
    body = {"apiVersion": prompt.api_version, "kind": "Workflow", "metadata": metadata, "spec": spec}
    try:
        Workflow.model_validate(body)
    except ValueError as exc:  # e.g. a case's inputs past the size of a Workflow's
        raise EvaluationError(f"spec.evaluations: its evaluation Workflow would be invalid: {exc}") from None
    return body


def same_workflow(observed: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Whether a Workflow read from the cluster is the evaluation Workflow built (its spec, defaults filled in by
    the API server or not, and its owner)."""
    try:
        spec_ok = Workflow.model_validate(dict(observed)).spec == Workflow.model_validate(dict(expected)).spec
    except ValueError:
        return False
    owners = (observed.get("metadata") or {}).get("ownerReferences") or []
    wanted = (expected.get("metadata") or {}).get("ownerReferences") or []
    return spec_ok and all(any(o.get("uid") == w.get("uid") for o in owners) for w in wanted)


def finished(workflow: Mapping[str, Any]) -> bool:
    return (workflow.get("status") or {}).get("phase") in _FINISHED


# --------------------------------------------------------------------------- the verdict


class _Node:
    __slots__ = ("calls", "outcome")

    def __init__(self) -> None:
        self.outcome: suites.Outcome | None = None
        self.calls: list[Mapping[str, Any]] = []


def _fold(records: Sequence[Record]) -> dict[str, _Node]:
    """Each node's last outcome (a retry's success replaces a failure) and every call it made."""
    nodes: dict[str, _Node] = {}
    for record in records:
        event = record.event
        if event.node is None:
            continue
        node = nodes.setdefault(event.node, _Node())
        if event.type == EventType.step_succeeded:
            node.outcome = suites.Outcome(event.data.get("output"))
        elif event.type == EventType.step_failed:
            error = event.data.get("error") or {}
            node.outcome = suites.Outcome(None, f"{error.get('type', 'Error')}: {error.get('message', '')}")
        elif event.type == EventType.cost_recorded and isinstance(event.data.get("call"), Mapping):
            node.calls.append(event.data["call"])
    return nodes


def _number(call: Mapping[str, Any], key: str) -> float:
    value = call.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def conclude(prompt: PromptVersion, records: Sequence[Record]) -> suites.SuiteResult:
    """The suite's result from its finished Workflow's journal; EvaluationError when a case never ran (the
    Workflow was cancelled or timed out first)."""
    suite = prompt.spec.evaluations
    if suite is None:
        raise EvaluationError("spec.evaluations: the PromptVersion has no evaluation suite")
    nodes = _fold(records)
    pairwise = suite.judge is not None and suite.judge.pairwise_against is not None
    cases: list[suites.CaseResult] = []
    missing: list[str] = []
    for i, case in enumerate(suite.cases):
        own = nodes.get(case_node(i))
        if own is None or own.outcome is None:
            missing.append(case.name)
            continue
        names = [case_node(i)] + [judge_node(i, j) for j in range(len(case.assertions))]
        names += [baseline_node(i), pairwise_node(i)] if pairwise else []
        calls = [c for n in names if n in nodes for c in nodes[n].calls]

        def outcome(node: str) -> suites.Outcome | None:
            found = nodes.get(node)
            return found.outcome if found is not None else None

        judged = {j: o for j in range(len(case.assertions)) if (o := outcome(judge_node(i, j))) is not None}
        cases.append(suites.case_result(
            case, suite, own.outcome, judged, outcome(baseline_node(i)), outcome(pairwise_node(i)),
            cost_usd=sum(_number(c, "cost_usd") for c in calls),
            input_tokens=int(sum(_number(c, "input_tokens") for c in calls)),
            output_tokens=int(sum(_number(c, "output_tokens") for c in calls)),
            latency_ms=sum(_number(c, "latency_ms") for c in calls)))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise EvaluationError(f"the evaluation ended before {len(missing)} of {len(suite.cases)} cases ran: {shown}")
    return suites.summarize(prompt, suite, cases)


def evaluation_status(phase: str, *, workflow: str | None, trigger: str, started_at: str | None,
                      result: suites.SuiteResult | None = None, finished_at: str | None = None,
                      message: str | None = None) -> dict[str, Any]:
    """The status patch ``{"evaluation": {...}}`` (every field given, so a merge patch leaves nothing stale)."""
    out: dict[str, Any] = {"phase": phase, "workflow": workflow, "trigger": trigger, "startedAt": started_at,
                           "finishedAt": finished_at, "message": message, "passRate": None, "meanScore": None,
                           "winRate": None, "cases": None, "passedCases": None, "costUsd": None,
                           "inputTokens": None, "outputTokens": None, "latencyP50Seconds": None}
    if result is not None:
        out.update({
            "passRate": round(result.pass_rate, 4), "meanScore": round(result.mean_score, 4),
            "winRate": round(result.win_rate, 4) if result.win_rate is not None else None,
            "cases": len(result.cases), "passedCases": sum(c.passed for c in result.cases),
            "costUsd": round(result.cost_usd, 6), "inputTokens": result.input_tokens,
            "outputTokens": result.output_tokens, "latencyP50Seconds": round(result.latency_p50_ms / 1000, 3),
        })
        if message is None and result.failures:
            out["message"] = "; ".join(result.failures)
    EvaluationStatus.model_validate({k: v for k, v in out.items() if v is not None})
    return {"evaluation": out}
