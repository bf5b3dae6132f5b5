"""Calibration from journals and ledger rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from agentflow.cost.calibration import Calibration, observations_from_calls, observations_from_journal
from agentflow.cost.estimate import Range
from agentflow.engine.values import CallRecord, Event, EventType
from agentflow.storage.ledger import LlmCall

from .test_estimate import build, llm


def words(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def call(inp: int, out: int) -> dict[str, object]:
    return {"attempt": 0, "call": CallRecord("llm", "openai/small", "h", "text", inp, out, 0.001).to_dict()}


def journal(outputs: list[int], fail_first: bool = False) -> list[Event]:
    E = EventType
    events = [Event(E.fan_out, "s", {"count": len(outputs)})]
    for i, out in enumerate(outputs):
        node = f"s[{i}]"
        if fail_first and i == 0:
            events += [Event(E.step_scheduled, node, {"step": "s", "attempt": 1, "inputs": {"x": "a b"}}),
                       Event(E.cost_recorded, node, {**call(12, out), "attempt": 1}),
                       Event(E.step_failed, node, {"attempt": 1, "error": {"type": "InvalidModelOutput"}})]
        events += [Event(E.step_scheduled, node, {"step": "s", "attempt": 2 if fail_first and i == 0 else 1,
                                                  "inputs": {"x": "a b"}}),
                   Event(E.cost_recorded, node, {**call(12, out), "attempt": 2 if fail_first and i == 0 else 1}),
                   Event(E.step_succeeded, node, {"attempt": 2 if fail_first and i == 0 else 1})]
    return events


def test_a_journal_gives_output_tokens_ratio_failures_and_fan_out() -> None:
    wf, cat = build([llm("s", forEach="inputs.items", inputs={"x": "${{ item }}"})], inputs={"items": []})
    observations, shapes = [], []
    for run, outs in (("r1", [10, 20]), ("r2", [30, 40, 50])):
        obs, shape = observations_from_journal(run, journal(outs, fail_first=run == "r1"), wf, cat, words)
        observations += obs
        shapes.append(shape)
    assert {o.call.status for o in observations} == {"ok", "InvalidModelOutput"}
    assert all(o.call.prompt == "p1" and o.call.model_requested == "openai/small" for o in observations)
    cal = Calibration.build(observations, [*shapes, shapes[0]], min_samples=3)
    hist = cal.step("openai/small", "p1", "s")
    assert hist is not None and hist.samples == 6
    assert hist.output_tokens == Range(10, (10 + 10 + 20 + 30 + 40 + 50) / 6, 50)
    # "Your role: r" + "say a b" = 6 words counted, 12 reported
    assert hist.input_ratio == pytest.approx(2.0)
    assert hist.failure_rate == pytest.approx(1 / 6)
    assert hist.calls_per_attempt == 1
    assert cal.fan_out("wf", "s") == Range(2, 7 / 3, 3)


def test_too_few_samples_leave_the_defaults() -> None:
    wf, cat = build([llm("s", forEach="inputs.items", inputs={"x": "${{ item }}"})], inputs={"items": []})
    obs, shape = observations_from_journal("r", journal([10, 20]), wf, cat, words)
    cal = Calibration.build(obs, [shape], min_samples=3)
    assert cal.step("openai/small", "p1", "s") is None and cal.fan_out("wf", "s") is None


def test_ledger_rows_count_an_attempt_as_failed_when_a_later_one_exists() -> None:
    def row(node: str, attempt: int, out: int) -> LlmCall:
        return LlmCall("ns", "wf", "uid", node, attempt, "s", "a", "p1", "openai/small", "openai/small", 10, out,
                       0.0, 1.0, False, "ok")

    obs = observations_from_calls([row("s", 1, 5), row("s", 2, 7), row("t", 1, 9)])
    hist = Calibration.build(obs, min_samples=3).step("openai/small", "p1", "s")
    assert hist is not None
    assert hist.failure_rate == pytest.approx(1 / 3) and hist.input_ratio is None
    assert hist.output_tokens == Range(5, 7, 9)
