"""Calibration: what past runs say about a step's tokens, retries, fan-out and state visits.

::

    observations_from_journal(run_id, events, workflow, catalog, count_tokens)  local runs (runner/store.py)
        -> (observations, RunShape)        CostRecorded calls of each attempt, its outcome, FanOut counts,
                                           StateEntered visits; the prompt recounted on the journalled inputs
    observations_from_calls(calls)         LlmCall rows of the ledger (agentflow.storage, ledger.calls)
    Calibration.build(observations, shapes, min_samples=3)
        .step(model, prompt, step)   -> StepHistory | None      what agentflow.cost.estimate reads
        .fan_out(workflow, step)     -> Range | None
        .visits(workflow, state)     -> Range | None

Calls are grouped by (the Agent's primary model, PromptVersion name, step): the model the estimate
prices, whatever fallback actually answered. A group replaces the estimate's defaults only with at least
``min_samples`` calls (fan-outs and visits: ``min_samples`` runs); below that the defaults stand.

What is learnt per group:

- **output tokens** per call: smallest, mean, largest;
- **prompt-token ratio**: the prompt tokens the provider reported for the first call of an attempt,
  divided by the tokens :mod:`agentflow.cost.estimate` counts on the same rendered messages. Only local
  journals hold the inputs to recount; ledger rows leave the ratio unknown (1.0 is then used);
- **failure rate**: failed attempts / attempts. A journal says which attempts failed; for ledger rows an
  attempt failed when the same run and node has a later attempt (a last attempt that failed for good is
  then counted as a success: ledger rows alone underestimate failures);
- **calls per attempt**: model calls / attempts (a structured answer's repair request makes 2).

Pure: the token counter is passed in.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..engine.values import CallRecord, EventType
from ..llm.prompts import PromptRenderError, render_messages
from ..models import Catalog, StepKind, StepSpec, Workflow
from ..storage.ledger import LlmCall
from .estimate import Range, StepHistory, TokenCounter, prompt_key

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "Calibration",
    "Observation",
    "RunShape",
    "observations_from_calls",
    "observations_from_journal",
]

DEFAULT_MIN_SAMPLES = 3
"""Calls (or runs, for fan-out and visits) a group needs before it replaces the estimate's defaults."""

LOCAL_NAMESPACE = "(local)"
"""The namespace of calls read from local run journals."""


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """One model call as calibration sees it."""

    call: LlmCall
    first_in_attempt: bool = True
    counted_input_tokens: int | None = None  # our count of the first call's messages (journals only)
    attempt_ok: bool | None = None  # the attempt's outcome when known (journals), else None


@dataclasses.dataclass(frozen=True, slots=True)
class RunShape:
    """How one run unfolded: forEach item counts per step, visits per state."""

    workflow: str
    fan_outs: Mapping[str, int]
    visits: Mapping[str, int]


def _step_of(workflow: Workflow, name: str) -> StepSpec | None:
    return next((step for key, step in workflow.spec.keyed_steps() if key == name), None)


def observations_from_journal(
    run_id: str,
    events: Iterable[Any],
    workflow: Workflow,
    catalog: Catalog,
    count_tokens: TokenCounter | None = None,
    *,
    namespace: str = LOCAL_NAMESPACE,
) -> tuple[list[Observation], RunShape]:
    """The model calls of one local run (its journal events, and the manifests it started with).

    ``events`` are engine Events (``.type``, ``.node``, ``.data``), e.g. ``[r.event for r in
    run_dir.read_records()]``. Each call becomes an :class:`LlmCall` whose ``status`` is ``ok`` when its
    attempt succeeded, else the attempt's error type. With ``count_tokens``, the first call of each
    attempt carries the prompt tokens counted on the inputs the attempt was scheduled with.
    """
    scheduled: dict[tuple[str, int], tuple[str, Mapping[str, Any]]] = {}
    calls: dict[tuple[str, int], list[CallRecord]] = defaultdict(list)
    outcome: dict[tuple[str, int], str] = {}
    fan_outs: dict[str, int] = {}
    visits: dict[str, int] = defaultdict(int)
    for event in events:
        data = event.data
        if event.type == EventType.step_scheduled and event.node is not None:
            scheduled[(event.node, int(data.get("attempt", 1)))] = (str(data.get("step", "")),
                                                                     data.get("inputs") or {})
        elif event.type == EventType.cost_recorded and event.node is not None:
            record = CallRecord.from_dict(data.get("call") or {})
            if record.kind == "llm":
                calls[(event.node, int(data.get("attempt", 1)))].append(record)
        elif event.type == EventType.step_succeeded and event.node is not None:
            outcome[(event.node, int(data.get("attempt", 1)))] = "ok"
        elif event.type == EventType.step_failed and event.node is not None:
            error = data.get("error") or {}
            outcome[(event.node, int(data.get("attempt", 1)))] = str(error.get("type") or "Error")
        elif event.type == EventType.fan_out and event.node is not None:
            fan_outs[event.node] = int(data.get("count", 0))
        elif event.type == EventType.state_entered:
            visits[str(data.get("state", ""))] += 1
    out: list[Observation] = []
    name = workflow.metadata.name
    for (node, attempt), records in calls.items():
        step_name, inputs = scheduled.get((node, attempt), (node.split("[", 1)[0].split("#", 1)[0], {}))
        step = _step_of(workflow, step_name)
        if step is None or step.kind is not StepKind.llm or step.agent_ref is None or step.prompt_ref is None:
            continue
        agent = catalog.agents.get(step.agent_ref.name)
        prompt = catalog.prompts.get(step.prompt_ref.name or "")  # a run's stored manifests name the version
        if agent is None or prompt is None:
            continue
        model = agent.spec.model.name
        counted = None
        if count_tokens is not None and (node, attempt) in scheduled:
            try:
                counted = count_tokens(model, render_messages(agent, prompt, inputs))
            except PromptRenderError:
                counted = None
        status = outcome.get((node, attempt))
        for i, record in enumerate(records):
            llm_call = LlmCall(
                namespace=namespace, workflow=name, run_uid=run_id, node=node, attempt=attempt, step=step_name,
                agent=agent.metadata.name, prompt=prompt_key(prompt), model_requested=model,
                model_used=record.name, input_tokens=record.input_tokens, output_tokens=record.output_tokens,
                cost_usd=record.cost_usd, latency_ms=record.latency_ms, cached=record.cached,
                status=status or "ok",
            )
            out.append(Observation(llm_call, first_in_attempt=i == 0, counted_input_tokens=counted if i == 0 else None,
                                   attempt_ok=None if status is None else status == "ok"))
    return out, RunShape(name, fan_outs, dict(visits))


def observations_from_calls(calls: Iterable[LlmCall]) -> list[Observation]:
    """Ledger rows as observations: the first call of an attempt is the earliest row of (run, node, attempt)."""
    rows = sorted(calls, key=lambda c: (c.run_uid, c.node, c.attempt, c.at.timestamp() if c.at else 0.0))
    seen: set[tuple[str, str, int]] = set()
    out = []
    for call in rows:
        key = (call.run_uid, call.node, call.attempt)
        out.append(Observation(call, first_in_attempt=key not in seen))
        seen.add(key)
    return out


def _range(values: Sequence[float]) -> Range:
    return Range(min(values), statistics.fmean(values), max(values))


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What past runs say, by (primary model, PromptVersion name, step); see the module docstring."""

    steps: Mapping[tuple[str, str, str], StepHistory]
    fan_outs: Mapping[tuple[str, str], Range]
    state_visits: Mapping[tuple[str, str], Range]
    min_samples: int = DEFAULT_MIN_SAMPLES

    @classmethod
    def build(cls, observations: Iterable[Observation], shapes: Iterable[RunShape] = (),
              min_samples: int = DEFAULT_MIN_SAMPLES) -> Calibration:
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        groups: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
        for obs in observations:
            c = obs.call
            groups[(c.model_requested, c.prompt, c.step)].append(obs)
        steps = {key: history for key, obs in groups.items() if (history := _history(obs, min_samples))}
        fans: dict[tuple[str, str], list[float]] = defaultdict(list)
        visits: dict[tuple[str, str], list[float]] = defaultdict(list)
        for shape in shapes:
            for step, count in shape.fan_outs.items():
                fans[(shape.workflow, step)].append(float(count))
            for state, count in shape.visits.items():
                visits[(shape.workflow, state)].append(float(count))
        return cls(
            steps,
            {k: _range(v) for k, v in fans.items() if len(v) >= min_samples},
            {k: _range(v) for k, v in visits.items() if len(v) >= min_samples},
            min_samples,
        )

    def step(self, model: str, prompt: str, step: str) -> StepHistory | None:
        return self.steps.get((model, prompt, step))

    def fan_out(self, workflow: str, step: str) -> Range | None:
        return self.fan_outs.get((workflow, step))

    def visits(self, workflow: str, state: str) -> Range | None:
        return self.state_visits.get((workflow, state))

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"model": m, "prompt": p, "step": s, "samples": h.samples,
             "outputTokens": h.output_tokens.to_dict(1) if h.output_tokens else None,
             "inputRatio": h.input_ratio, "failureRate": h.failure_rate, "callsPerAttempt": h.calls_per_attempt}
            for (m, p, s), h in sorted(self.steps.items())
        ]


def _history(observations: Sequence[Observation], min_samples: int) -> StepHistory | None:
    if len(observations) < min_samples:
        return None
    outputs = [float(o.call.output_tokens) for o in observations]
    ratios = [o.call.input_tokens / o.counted_input_tokens for o in observations
              if o.first_in_attempt and o.counted_input_tokens and o.call.input_tokens > 0]
    attempts: dict[tuple[str, str, int], bool | None] = {}
    calls_in: dict[tuple[str, str, int], int] = defaultdict(int)
    for o in observations:
        key = (o.call.run_uid, o.call.node, o.call.attempt)
        calls_in[key] += 1
        attempts[key] = o.attempt_ok if attempts.get(key) is None else attempts[key]
    last: dict[tuple[str, str], int] = {}
    for run, node, attempt in attempts:
        last[(run, node)] = max(last.get((run, node), 0), attempt)
    failed = sum(
        1 for (run, node, attempt), ok in attempts.items()
        if (ok is False) or (ok is None and attempt < last[(run, node)])
    )
    return StepHistory(
        samples=len(observations),
        output_tokens=_range(outputs),
        input_ratio=statistics.fmean(ratios) if len(ratios) >= min_samples else None,
        failure_rate=failed / len(attempts),
        calls_per_attempt=sum(calls_in.values()) / len(attempts),
    )
