"""WorkflowSchedules: what to start when (pure: the time is given), and the objects that decision writes.

::

    slot_times / next_slot / last_slot(cron, tz, ...)       the instants a cron expression names in a time zone
    decide(schedule, now, created, runs) -> Decision        start a slot? cancel (Replace)? delete old history?
    workflow_body(schedule, slot, namespace) -> body        the Workflow of one slot (name: SCHEDULE-MINUTES)
    status_body(decision, runs) -> status                   lastScheduleTime, nextScheduleTime, active, message

Wall-clock times in a time zone: a time skipped by a DST change (02:30 on the spring-forward night) runs as
the clock moved (at 03:30); a time repeated by one (02:30 on the fall-back night) runs once, at its first
occurrence. Only the most recent slot due is started (earlier ones missed while the operator was down are
skipped); a slot later than startingDeadlineSeconds is missed. A Workflow's name is derived from its slot, so
a restarted operator that sees the slot again finds the Workflow already there and never starts it twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from ..models import Phase, WorkflowSchedule
from ..models.cron import Cron, parse_cron
from ..models.template import SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION

__all__ = ["Decision", "ScheduledRun", "decide", "last_slot", "next_slot", "run_of", "status_body",
           "workflow_body", "workflow_name"]

UTC = dt.UTC
_SEARCH_DAYS = 5 * 366 + 1
"""How far a slot is looked for (29 February on a Monday comes round within 28 years; 5 covers every
day-of-month and month combination that exists)."""
FINISHED = frozenset({Phase.succeeded.value, Phase.failed.value, Phase.cancelled.value})


def _day_slots(cron: Cron, tz: ZoneInfo, day: dt.date) -> list[dt.datetime]:
    """The instants (UTC) a matching local day runs at, in order; [] when the day does not run."""
    if not cron.day_matches(day.day, day.month, (day.weekday() + 1) % 7):
        return []
    out = {dt.datetime(day.year, day.month, day.day, h, m, tzinfo=tz, fold=0).astimezone(UTC)
           for h in cron.hours for m in cron.minutes}
    return sorted(out)


def _days(start: dt.date, step: int) -> Iterator[dt.date]:
    for i in range(_SEARCH_DAYS):
        yield start + dt.timedelta(days=i * step)


def next_slot(cron: Cron, tz: ZoneInfo, after: dt.datetime) -> dt.datetime | None:
    """The first instant strictly after ``after`` (None if there is none within five years)."""
    for day in _days(after.astimezone(tz).date() - dt.timedelta(days=1), 1):
        for slot in _day_slots(cron, tz, day):
            if slot > after:
                return slot
    return None


def last_slot(cron: Cron, tz: ZoneInfo, at: dt.datetime) -> dt.datetime | None:
    """The last instant at or before ``at`` (None if there is none within five years)."""
    for day in _days(at.astimezone(tz).date() + dt.timedelta(days=1), -1):
        for slot in reversed(_day_slots(cron, tz, day)):
            if slot <= at:
                return slot
    return None


def slot_times(cron: Cron, tz: ZoneInfo, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` instants after ``after``."""
    out: list[dt.datetime] = []
    at: dt.datetime | None = after
    while at is not None and len(out) < count:
        at = next_slot(cron, tz, at)
        if at is not None:
            out.append(at)
    return out


def rfc3339(at: dt.datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def workflow_name(schedule: str, slot: dt.datetime) -> str:
    """SCHEDULE-MINUTES (minutes since the epoch of the slot): the same slot always gets the same name."""
    return f"{schedule}-{int(slot.timestamp()) // 60}"


@dataclasses.dataclass(frozen=True)
class ScheduledRun:
    """A Workflow a schedule created, as observed."""

    name: str
    slot: dt.datetime
    phase: str | None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


def run_of(body: Mapping[str, Any]) -> ScheduledRun | None:
    """A Workflow body read from the cluster as a run of its schedule (None without its slot annotation)."""
    metadata = body.get("metadata") or {}
    slot = (metadata.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION)
    if not isinstance(slot, str):
        return None
    try:
        at = parse_time(slot)
    except ValueError:
        return None
    phase = (body.get("status") or {}).get("phase")
    return ScheduledRun(str(metadata.get("name")), at, phase if isinstance(phase, str) else None)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a schedule does now."""

    start: dt.datetime | None = None
    """The slot to create a Workflow for."""
    cancel: tuple[str, ...] = ()
    """Active runs to cancel first (concurrencyPolicy Replace)."""
    delete: tuple[str, ...] = ()
    """Finished runs past the history limits, oldest first."""
    last_schedule_time: dt.datetime | None = None
    """The last slot a run was started for (after this decision)."""
    next_schedule_time: dt.datetime | None = None
    """The next slot (None while suspended)."""
    message: str = ""


def _history(schedule: WorkflowSchedule, runs: Sequence[ScheduledRun]) -> tuple[str, ...]:
    spec = schedule.spec
    newest = sorted((r for r in runs if r.finished), key=lambda r: r.slot, reverse=True)
    succeeded = [r for r in newest if r.phase == Phase.succeeded.value]
    failed = [r for r in newest if r.phase != Phase.succeeded.value]
    old = succeeded[spec.successful_jobs_history_limit:] + failed[spec.failed_jobs_history_limit:]
    return tuple(r.name for r in sorted(old, key=lambda r: r.slot))


def decide(schedule: WorkflowSchedule, now: dt.datetime, created: dt.datetime,
           runs: Sequence[ScheduledRun]) -> Decision:
    """What to do at ``now``, given when the schedule was created and its runs (pure). The last schedule time is
    the later of status.lastScheduleTime and the newest run's slot: a run created just before a crash (its status
    never written) counts, and so does one since deleted by the history limits."""
    spec = schedule.spec
    cron, tz = parse_cron(spec.schedule), ZoneInfo(spec.time_zone)
    delete = _history(schedule, runs)
    recorded = schedule.status.last_schedule_time if schedule.status is not None else None
    slots = [r.slot for r in runs] + ([parse_time(recorded)] if recorded else [])
    last = max(slots, default=None)
    if spec.suspend:
        return Decision(delete=delete, last_schedule_time=last, message="suspended")
    upcoming = next_slot(cron, tz, now)
    due = last_slot(cron, tz, now)
    base = Decision(delete=delete, last_schedule_time=last, next_schedule_time=upcoming)
    if due is None or due <= max(last or created, created):
        return base
    late = (now - due).total_seconds()
    if spec.starting_deadline_seconds is not None and late > spec.starting_deadline_seconds:
        return dataclasses.replace(base, message=f"missed {rfc3339(due)}: {late:.0f} s late, past "
                                                 f"startingDeadlineSeconds ({spec.starting_deadline_seconds})")
    active = [r.name for r in runs if not r.finished]
    if active and spec.concurrency_policy == "Forbid":
        return dataclasses.replace(base, message=f"{rfc3339(due)} waits: {', '.join(active)} still running "
                                                 "(concurrencyPolicy Forbid)")
    cancel = tuple(active) if spec.concurrency_policy == "Replace" else ()
    message = f"started {workflow_name(schedule.metadata.name, due)} for {rfc3339(due)}"
    if cancel:
        message += f", cancelling {', '.join(cancel)} (concurrencyPolicy Replace)"
    return dataclasses.replace(base, start=due, cancel=cancel, last_schedule_time=due, message=message)


def workflow_body(schedule: WorkflowSchedule, slot: dt.datetime, namespace: str) -> dict[str, Any]:
    """The Workflow of one slot: made from the schedule's template with its inputs, owned by the schedule."""
    meta = schedule.metadata
    metadata: dict[str, Any] = {
        "name": workflow_name(meta.name, slot),
        "namespace": namespace,
        "labels": {SCHEDULE_LABEL: meta.name, "app.kubernetes.io/managed-by": "agentflow"},
        "annotations": {SCHEDULED_TIME_ANNOTATION: rfc3339(slot)},
    }
    if meta.uid:
        metadata["ownerReferences"] = [{"apiVersion": schedule.api_version, "kind": schedule.kind, "name": meta.name,
                                        "uid": meta.uid, "controller": True, "blockOwnerDeletion": True}]
    ref = schedule.spec.workflow_template_ref
    template_ref: dict[str, Any] = {"name": ref.name}
    if ref.kind != "WorkflowTemplate":  # the default is left out, as a person writes it
        template_ref["kind"] = ref.kind
    spec: dict[str, Any] = {"workflowTemplateRef": template_ref}
    if schedule.spec.inputs:
        spec["inputs"] = dict(schedule.spec.inputs)
    return {"apiVersion": schedule.api_version, "kind": "Workflow", "metadata": metadata, "spec": spec}


def status_body(decision: Decision, runs: Sequence[ScheduledRun], generation: int | None) -> dict[str, Any]:
    """The schedule's status after a decision (runs: as observed before it, plus the one it started)."""
    gone = set(decision.cancel)
    active = [{"name": r.name, "scheduledTime": rfc3339(r.slot)}
              for r in sorted(runs, key=lambda r: r.slot) if not r.finished and r.name not in gone]
    status: dict[str, Any] = {
        "lastScheduleTime": rfc3339(decision.last_schedule_time) if decision.last_schedule_time else None,
        "nextScheduleTime": rfc3339(decision.next_schedule_time) if decision.next_schedule_time else None,
        "active": active,
        "observedGeneration": generation,
    }
    if decision.message:
        status["message"] = decision.message
    return status
