"""What one run says about the version of a prompt family it got (the samples a PromptRollout tests)."""

from __future__ import annotations

from agentflow.engine.journal import Journal, Record
from agentflow.engine.values import Event, EventType
from agentflow.quality.versions import run_sample

E = EventType


def run_events(version: str, *, at: float = 100.0, family: str = "t", schema_failure: bool = False,
               cost: float = 0.01, score: float | None = None, finished: bool = True,
               reason: str = "candidate") -> list[Event]:
    """A run whose family step ``a`` got ``version``: one attempt, answered (or broken against the schema)."""
    choice = {"family": family, "name": version, "version": "1", "reason": reason, "bucket": 3}
    end = (Event(E.step_failed, "a", {"attempt": 1, "error": {"type": "InvalidModelOutput", "message": "x"}},
                 at + 2.0) if schema_failure else
           Event(E.step_succeeded, "a", {"attempt": 1, "output": {}, **({"score": score} if score is not None
                                                                       else {})}, at + 2.0))
    events = [Event(E.run_started, None, {"workflow": "w", "prompts": {"a": choice}}, at),
              Event(E.step_scheduled, "a", {"step": "a", "kind": "llm", "attempt": 1}, at + 0.5),
              Event(E.cost_recorded, "a", {"call": {"kind": "llm", "cost_usd": cost}}, at + 1.0),
              Event(E.step_scheduled, "b", {"step": "b", "kind": "tool", "attempt": 1}, at + 0.5),
              Event(E.cost_recorded, "b", {"call": {"kind": "llm", "cost_usd": 5.0}}, at + 1.0),  # not the family's
              end]
    if finished:
        events.append(Event(E.run_finished, None, {"phase": "Failed" if schema_failure else "Succeeded"}, at + 3.0))
    return events


def records(events: list[Event]) -> list[Record]:
    journal = Journal()
    return [journal.append(e) for e in events]


def test_a_run_gives_samples_of_its_version() -> None:
    sample = run_sample("r1", "t", run_events("t-v2", score=0.7))
    assert sample is not None and (sample.version, sample.started_at, sample.attempts) == ("t-v2", 100.0, 1)
    assert sample.values["stepFailureRate"] == (0.0,) and sample.values["schemaFailureRate"] == (0.0,)
    assert sample.values["latencySeconds"] == (1.5,) and sample.values["judgeScore"] == (0.7,)
    assert sample.values["costPerRun"] == (0.01,)  # step b's calls are not the family's


def test_a_schema_failure_counts_as_both_failures() -> None:
    sample = run_sample("r1", "t", run_events("t-v2", schema_failure=True))
    assert sample is not None
    assert sample.values["schemaFailureRate"] == (1.0,) and sample.values["stepFailureRate"] == (1.0,)
    assert sample.values["judgeScore"] == ()


def test_runs_that_say_nothing() -> None:
    assert run_sample("r1", "other", run_events("t-v2")) is None  # another family
    assert run_sample("r1", "t", run_events("t-v2", reason="pinned")) is None  # not part of the split
    assert run_sample("r1", "t", run_events("t-v2")[1:]) is None  # no RunStarted
    unfinished = run_sample("r1", "t", run_events("t-v2", finished=False))
    assert unfinished is not None and unfinished.values["costPerRun"] == ()  # its cost is not known yet
