"""WorkflowSchedules on a cluster: one sync observes a schedule's Workflows, asks the pure decision
(agentflow.k8s.schedule.decide) what to do now, does it, and writes the schedule's status.

Run by a kopf timer per schedule (agentflow.controller.handlers). Safe to repeat and to crash anywhere: a
slot's Workflow has a name derived from the slot (creating it again finds it there), the last schedule time
is read from the Workflows as well as the status, cancelling (Replace) is ``spec.cancel: true`` and deleting
old history is idempotent. An invalid schedule (a bad cron expression or time zone, which admission refuses
anyway) gets the problem on its status and starts nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from ..k8s.kube import Kube
from ..k8s.schedule import ScheduledRun, decide, run_of, status_body, workflow_body
from ..models import ManifestError, WorkflowSchedule, parse_resource
from ..models.cron import CronError
from ..models.template import SCHEDULE_LABEL

__all__ = ["ScheduleSync"]

log = logging.getLogger("agentflow.schedules")

WORKFLOWS = "workflows"
SCHEDULES = "workflowschedules"


class ScheduleSync:
    """Starts the runs of WorkflowSchedules."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def runs(self, namespace: str, schedule: str) -> list[ScheduledRun]:
        """The Workflows this schedule created (by its label), as runs with their slots."""
        out: list[ScheduledRun] = []
        for body in await self.kube.list_resources(WORKFLOWS, namespace):
            labels = (body.get("metadata") or {}).get("labels") or {}
            run = run_of(body) if labels.get(SCHEDULE_LABEL) == schedule else None
            if run is not None:
                out.append(run)
        return out

    async def sync(self, body: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
        """One pass over one schedule at ``now``: the status written."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            schedule = parse_resource(body)
            assert isinstance(schedule, WorkflowSchedule)
        except ManifestError as exc:
            return await self._status(namespace, name, {"message": f"invalid: {exc}", "active": []})
        created = _created(meta, now)
        runs = await self.runs(namespace, name)
        try:
            decision = decide(schedule, now, created, runs)
        except (CronError, ValueError, KeyError, OSError) as exc:  # a bad time zone or expression admission let through
            return await self._status(namespace, name, {"message": f"invalid: {exc}", "active": []})
        for victim in decision.cancel:
            await self.kube.patch_resource(WORKFLOWS, namespace, victim, {"spec": {"cancel": True}})
        if decision.start is not None:
            workflow = workflow_body(schedule, decision.start, namespace)
            if await self.kube.create_resource(WORKFLOWS, namespace, workflow):
                log.info("%s/%s: started %s", namespace, name, workflow["metadata"]["name"])
            runs.append(ScheduledRun(workflow["metadata"]["name"], decision.start, None))
        for old in decision.delete:
            await self.kube.delete_resource(WORKFLOWS, namespace, old)
        kept = [r for r in runs if r.name not in set(decision.delete)]
        return await self._status(namespace, name, status_body(decision, kept, schedule.metadata.generation))

    async def _status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        await self.kube.patch_status(SCHEDULES, namespace, name, status)
        return status


def _created(meta: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    text = meta.get("creationTimestamp")
    if isinstance(text, str):
        try:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
    return now  # not known: only slots from now on


