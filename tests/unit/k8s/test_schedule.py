"""WorkflowSchedule decisions in virtual time: cron in a time zone (DST), deadlines, concurrency, history."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agentflow.k8s.schedule import (
    ScheduledRun,
    decide,
    last_slot,
    next_slot,
    run_of,
    slot_times,
    status_body,
    workflow_body,
    workflow_name,
)
from agentflow.models import WorkflowSchedule, parse_resource
from agentflow.models.cron import CronError, parse_cron

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
CREATED = dt.datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def schedule(status: dict[str, Any] | None = None, **spec: Any) -> WorkflowSchedule:
    body: dict[str, Any] = {
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowSchedule",
        "metadata": {"name": "nightly", "uid": "u-1", "generation": 2},
        "spec": {"schedule": "0 * * * *", "workflowTemplateRef": {"name": "digest"}, **spec}}
    if status is not None:
        body["status"] = status
    resource = parse_resource(body)
    assert isinstance(resource, WorkflowSchedule)
    return resource


def run(slot: str, phase: str | None = "Running") -> ScheduledRun:
    return ScheduledRun(workflow_name("nightly", at(slot)), at(slot), phase)


# --- cron in a time zone ---------------------------------------------------------------------------------


def test_a_time_skipped_by_spring_forward_runs_as_the_clock_moved() -> None:
    slots = slot_times(parse_cron("30 2 * * *"), BERLIN, at("2026-03-28T00:00:00+01:00"), 3)
    assert [s.astimezone(BERLIN).isoformat() for s in slots] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_a_time_repeated_by_fall_back_runs_once() -> None:
    slots = slot_times(parse_cron("30 2 * * *"), BERLIN, at("2026-10-24T12:00:00+02:00"), 2)
    assert [s.astimezone(BERLIN).isoformat() for s in slots] == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    hourly = slot_times(parse_cron("0 * * * *"), BERLIN, at("2026-10-25T01:30:00+02:00"), 3)
    assert [s.isoformat() for s in hourly] == [  # 02:00 CEST, 03:00 CET: 02:00 CET (the repeat) does not run
        "2026-10-25T00:00:00+00:00", "2026-10-25T02:00:00+00:00", "2026-10-25T03:00:00+00:00"]


def test_day_fields_names_steps_and_macros() -> None:
    weekdays = slot_times(parse_cron("30 7 * * mon-fri"), UTC, at("2026-12-04T08:00:00+00:00"), 2)  # a Friday
    assert [s.date().isoformat() for s in weekdays] == ["2026-12-07", "2026-12-08"]
    either = parse_cron("0 0 13 * fri")  # both day fields restricted: either matches
    assert next_slot(either, UTC, at("2026-11-01T00:00:00+00:00")) == at("2026-11-06T00:00:00+00:00")
    assert parse_cron("@hourly") == parse_cron("0 * * * *")
    assert parse_cron("*/15 * * * *").minutes == frozenset({0, 15, 30, 45})
    assert next_slot(parse_cron("0 0 29 2 *"), UTC, at("2026-03-01T00:00:00+00:00")) == at(
        "2028-02-29T00:00:00+00:00")
    assert last_slot(parse_cron("0 0 31 2 *"), UTC, at("2026-03-01T00:00:00+00:00")) is None


@pytest.mark.parametrize(("text", "why"), [
    ("* * *", "expected 5 fields"), ("60 * * * *", "minute: 60 is outside 0-59"),
    ("* * * foo *", "month: 'foo' is not a number"), ("5-1 * * * *", "runs backwards"),
    ("*/0 * * * *", "step '0' must be a positive number")])
def test_bad_expressions_name_the_field(text: str, why: str) -> None:
    with pytest.raises(CronError, match=why):
        parse_cron(text)


# --- decisions --------------------------------------------------------------------------------------------


def test_nothing_before_the_first_slot_after_creation() -> None:
    decision = decide(schedule(), at("2026-01-01T00:30:00+00:00"), at("2026-01-01T00:10:00+00:00"), [])
    assert decision.start is None and decision.next_schedule_time == at("2026-01-01T01:00:00+00:00")


def test_the_due_slot_starts_once_with_a_deterministic_name() -> None:
    now = at("2026-01-01T05:00:20+00:00")
    decision = decide(schedule(), now, CREATED, [])
    assert decision.start == at("2026-01-01T05:00:00+00:00")
    assert decision.next_schedule_time == at("2026-01-01T06:00:00+00:00")
    started = run("2026-01-01T05:00:00+00:00", None)
    again = decide(schedule(), now, CREATED, [started])  # a restarted operator sees the Workflow: not twice
    assert again.start is None and again.last_schedule_time == decision.start
    assert workflow_name("nightly", decision.start) == started.name == "nightly-29454060"


def test_a_slot_already_recorded_in_status_is_not_started_again_after_its_run_was_deleted() -> None:
    recorded = schedule(status={"lastScheduleTime": "2026-01-01T05:00:00Z"}, successfulJobsHistoryLimit=0)
    assert decide(recorded, at("2026-01-01T05:30:00+00:00"), CREATED, []).start is None


def test_only_the_latest_missed_slot_runs_and_past_the_deadline_none() -> None:
    down = [run("2026-01-01T01:00:00+00:00", "Succeeded")]
    now = at("2026-01-01T05:00:30+00:00")  # the operator was down from 01:00 to 05:00
    assert decide(schedule(), now, CREATED, down).start == at("2026-01-01T05:00:00+00:00")
    late = at("2026-01-01T05:03:00+00:00")
    missed = decide(schedule(startingDeadlineSeconds=60), late, CREATED, down)
    assert missed.start is None and "missed 2026-01-01T05:00:00Z: 180 s late" in missed.message
    assert decide(schedule(startingDeadlineSeconds=600), late, CREATED, down).start is not None


def test_forbid_waits_while_a_run_is_active_then_starts_within_the_deadline() -> None:
    active = [run("2026-01-01T04:00:00+00:00", "Running")]
    forbid = schedule(concurrencyPolicy="Forbid", startingDeadlineSeconds=300)
    waiting = decide(forbid, at("2026-01-01T05:00:10+00:00"), CREATED, active)
    assert waiting.start is None and "still running (concurrencyPolicy Forbid)" in waiting.message
    done = [run("2026-01-01T04:00:00+00:00", "Succeeded")]
    assert decide(forbid, at("2026-01-01T05:02:00+00:00"), CREATED, done).start == at("2026-01-01T05:00:00+00:00")
    assert decide(forbid, at("2026-01-01T05:06:00+00:00"), CREATED, done).start is None  # past the deadline


def test_replace_cancels_the_active_runs_and_allow_keeps_them() -> None:
    active = [run("2026-01-01T04:00:00+00:00", "Running")]
    now = at("2026-01-01T05:00:10+00:00")
    replace = decide(schedule(concurrencyPolicy="Replace"), now, CREATED, active)
    assert replace.start is not None and replace.cancel == (active[0].name,)
    allow = decide(schedule(), now, CREATED, active)
    assert allow.start is not None and allow.cancel == ()


def test_suspended_starts_nothing_and_has_no_next_run() -> None:
    decision = decide(schedule(suspend=True), at("2026-01-01T05:00:10+00:00"), CREATED, [])
    assert decision.start is None and decision.next_schedule_time is None and decision.message == "suspended"


def test_history_beyond_the_limits_is_deleted_oldest_first() -> None:
    runs = [run(f"2026-01-01T0{h}:00:00+00:00", phase) for h, phase in
            [(1, "Succeeded"), (2, "Failed"), (3, "Succeeded"), (4, "Cancelled"), (5, "Succeeded"), (6, "Running")]]
    decision = decide(schedule(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1),
                      at("2026-01-01T06:10:00+00:00"), CREATED, runs)
    assert decision.delete == (runs[0].name, runs[1].name)


def test_in_a_time_zone_a_daily_run_follows_the_local_clock_across_dst() -> None:
    berlin = schedule(schedule="30 2 * * *", timeZone="Europe/Berlin")
    now = at("2026-03-29T03:31:00+02:00")  # the night 02:30 does not exist
    decision = decide(berlin, now, CREATED, [run("2026-03-28T02:30:00+01:00", "Succeeded")])
    assert decision.start == at("2026-03-29T03:30:00+02:00")


# --- what is written ----------------------------------------------------------------------------------------


def test_the_workflow_of_a_slot_and_the_status() -> None:
    sched = schedule(inputs={"topic": "alerts"}, concurrencyPolicy="Replace")
    slot = at("2026-01-01T05:00:00+00:00")
    body = workflow_body(sched, slot, "team-a")
    assert body == {
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "nightly-29454060", "namespace": "team-a",
                     "labels": {"agentflow.dev/schedule": "nightly", "app.kubernetes.io/managed-by": "agentflow"},
                     "annotations": {"agentflow.dev/scheduled-time": "2026-01-01T05:00:00Z"},
                     "ownerReferences": [{"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowSchedule",
                                          "name": "nightly", "uid": "u-1", "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"workflowTemplateRef": {"name": "digest"}, "inputs": {"topic": "alerts"}}}
    assert run_of(body) == ScheduledRun("nightly-29454060", slot, None)
    old = run("2026-01-01T04:00:00+00:00")
    decision = decide(sched, at("2026-01-01T05:00:10+00:00"), CREATED, [old])
    status = status_body(decision, [old, ScheduledRun("nightly-29454060", slot, None)], 2)
    assert status == {"lastScheduleTime": "2026-01-01T05:00:00Z", "nextScheduleTime": "2026-01-01T06:00:00Z",
                      "active": [{"name": "nightly-29454060", "scheduledTime": "2026-01-01T05:00:00Z"}],
                      "observedGeneration": 2,
                      "message": "started nightly-29454060 for 2026-01-01T05:00:00Z, cancelling nightly-29454000 "
                                 "(concurrencyPolicy Replace)"}
