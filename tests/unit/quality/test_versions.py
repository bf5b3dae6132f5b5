"""What one run says about the version of a prompt family it got (the samples a PromptRollout tests)."""

from __future__ import annotations

from agentflow.quality.versions import run_sample
from agentflow.testing import prompt_run_events as run_events


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
