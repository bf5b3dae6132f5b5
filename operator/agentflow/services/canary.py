"""PromptRollouts on a cluster: one sync reads a rollout, its two PromptVersions and the evidence of their live
runs, asks the pure gate (agentflow.prompts.canary.decide) what to do, and records the decision.

::

    kopf timer (controller.handlers, every ROLLOUT_INTERVAL_SECONDS per PromptRollout)
      -> RolloutSync.sync(body)
           PromptVersions spec.stable / spec.candidate  (get; spec.evaluations, status.evaluation)
           PostgresStore.family_runs(namespace, family, since=status.startedAt)   the journal: durable, so a
               restarted operator (or another replica) counts the same runs
           quality.versions.run_sample per run -> per version: runs in the step, samples per signal
           prompts.canary.decide -> Decision
           status (k8s.canary.rollout_status), patched only if the object is still at the resourceVersion read
               (of two replicas one decides); then, for a decision that changes something, an Event and an
               audit record (kind policy_decision, actor operator, subject NS/promptrollout/NAME)

Run selection (agentflow.prompts.rollout) reads status.weight of this generation from the operator's index of
PromptRollouts: the candidate's share moves only when a decision here is written.

At most ``limit`` runs (the newest) are read per sync; the samples are counted from the rollout's start, so a
rollout that needs more than that many runs to decide would count only the newest ones.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..audit.records import AuditEvent, AuditSink
from ..engine.journal import Record
from ..engine.values import EventType
from ..k8s.canary import decision_event, rollout_status
from ..k8s.events import event_body
from ..k8s.kube import KubeError, NotFound
from ..k8s.podspec import Owner
from ..models import ManifestError, PromptRollout, parse_resource
from ..prompts.canary import (
    TERMINAL,
    Decision,
    EvaluationState,
    RolloutState,
    Sample,
    VersionStats,
    decide,
    evaluation_gate,
)
from ..quality.versions import RunSample, run_sample

__all__ = ["ROLLOUTS", "RolloutSync", "version_stats"]

log = logging.getLogger("agentflow.canary")

ROLLOUTS = "promptrollouts"
PROMPTS = "promptversions"
RUN_LIMIT = 5000
_TYPES = tuple(t.value for t in (EventType.run_started, EventType.step_scheduled, EventType.step_succeeded,
                                 EventType.step_failed, EventType.step_timed_out, EventType.step_cancelled,
                                 EventType.cost_recorded, EventType.run_finished))


class _Kube(Protocol):
    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...
    async def patch_status_at(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                              resource_version: str) -> bool: ...
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


class _Runs(Protocol):
    async def family_runs(self, namespace: str, family: str, *, since: float, types: Sequence[str],
                          limit: int) -> list[tuple[str, list[Record]]]: ...


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def version_stats(samples: Sequence[RunSample], version: str, step_since: float) -> VersionStats:
    """One version's evidence: its runs started at or after ``step_since`` with an ended attempt, and every
    sample of ``samples`` (the runs since the rollout started)."""
    mine = [s for s in samples if s.version == version]
    signals: dict[str, Sample] = {}
    for s in mine:
        for name, values in s.values.items():
            current = signals.get(name, Sample())
            for v in values:
                current = current.add(v)
            signals[name] = current
    return VersionStats(sum(1 for s in mine if s.attempts and s.started_at >= step_since), signals)


class RolloutSync:
    """Drives PromptRollouts."""

    def __init__(self, kube: _Kube, runs: _Runs, *, audit: AuditSink | None = None,
                 clock: Callable[[], float] = time.time, reporting_instance: str = "",
                 limit: int = RUN_LIMIT) -> None:
        self.kube = kube
        self.runs = runs
        self.audit = audit
        self.clock = clock
        self.reporting_instance = reporting_instance
        self.limit = limit

    async def sync(self, body: Mapping[str, Any]) -> Decision | None:
        """One look at one PromptRollout: the decision made (None: its spec is invalid, or nothing to do)."""
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        generation = meta.get("generation")
        old: Mapping[str, Any] = body.get("status") or {}
        current = old.get("observedGeneration") == generation
        if current and old.get("phase") in TERMINAL:
            return None
        try:
            rollout = parse_resource(dict(body))
            assert isinstance(rollout, PromptRollout)
        except ManifestError as exc:  # admission refuses these; one made without the webhook says why here
            message = "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
            decision = Decision("Fail", "Failed", 0, 0, "InvalidSpec", message)
            await self._record(body, decision, None, None, 0, 0)
            return decision
        spec = rollout.spec
        now = self.clock()
        state = RolloutState()
        if current and isinstance(old.get("phase"), str):
            state = RolloutState(str(old["phase"]), int(old.get("stepIndex") or 0), _epoch(old.get("stepStartedAt")))
        versions: dict[str, EvaluationState] = {}
        for field in ("stable", "candidate"):
            version = getattr(spec, field)
            try:
                pv = await self.kube.get_resource(PROMPTS, namespace, version)
            except NotFound:
                decision = Decision("Wait", "WaitingForEvaluation", 0, 0, "MissingPromptVersion",
                                    f"spec.{field}: PromptVersion {version!r} does not exist (yet)")
                await self._record(body, decision, None, None, 0, 0)
                return decision
            family = (pv.get("spec") or {}).get("prompt")
            if family != spec.prompt:
                decision = Decision("Fail", "Failed", 0, 0, "WrongFamily", f"spec.{field}: PromptVersion {version!r} "
                                    f"is of family {family!r}, not spec.prompt {spec.prompt!r}")
                await self._record(body, decision, None, None, 0, 0)
                return decision
            versions[field] = EvaluationState.from_body(pv)
        evaluation = evaluation_gate(spec, versions["candidate"], versions["stable"])
        started = _epoch(old.get("startedAt")) if current and state.phase == "Progressing" else None
        candidate, stable = VersionStats(), VersionStats()
        if started is not None and evaluation[0] == "Pass":
            records = await self.runs.family_runs(namespace, spec.prompt, since=started, types=_TYPES,
                                                  limit=self.limit)
            samples = [s for s in (run_sample(uid, spec.prompt, [r.event for r in rs]) for uid, rs in records)
                       if s is not None]
            since = state.step_started_at if state.step_started_at is not None else started
            candidate = version_stats(samples, spec.candidate, since)
            stable = version_stats(samples, spec.stable, since)
        decision = decide(spec, state, now, evaluation, candidate, stable)
        if decision.action == "Start":
            started = now
        step_started = now if decision.new_step else state.step_started_at
        runs = (0, 0) if decision.new_step else (candidate.step_runs, stable.step_runs)
        await self._record(body, decision, started, step_started, *runs)
        return decision

    async def _record(self, body: Mapping[str, Any], decision: Decision, started: float | None,
                      step_started: float | None, candidate_runs: int, stable_runs: int) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        old: Mapping[str, Any] = body.get("status") or {}
        now_iso = iso(self.clock())
        status = rollout_status(decision, generation=meta.get("generation"), now_iso=now_iso,
                                started_at=iso(started) if started is not None else None,
                                step_started_at=iso(step_started) if step_started is not None else None,
                                candidate_runs=candidate_runs, stable_runs=stable_runs, old=old)
        if _same(old, status):
            return
        if not await self.kube.patch_status_at(ROLLOUTS, namespace, name, status,
                                               str(meta.get("resourceVersion", ""))):
            log.info("PromptRollout %s/%s changed meanwhile (another replica?); next round", namespace, name)
            return
        new_wait = decision.action == "Wait" and (old.get("phase") != decision.phase or
                                                  old.get("observedGeneration") != meta.get("generation"))
        if not decision.changes and not new_wait:
            return
        log.info("PromptRollout %s/%s: %s: %s", namespace, name, decision.action, decision.message)
        type_, reason, message = decision_event(decision)
        owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "PromptRollout", name,
                      str(meta.get("uid", "")))
        try:
            await self.kube.create_event(namespace, event_body(owner, namespace, type_, reason, message, now_iso,
                                                               reporting_instance=self.reporting_instance))
        except KubeError as exc:  # the status and the audit record still say it
            log.warning("could not create the Event of PromptRollout %s/%s: %s", namespace, name, exc)
        if self.audit is not None:
            spec = body.get("spec") or {}
            await self.audit.append([AuditEvent(
                "policy_decision", "operator", namespace, f"{namespace}/promptrollout/{name}", decision.action.lower(),
                now_iso, {"policy": "PromptRollout", "rollout": name, "prompt": spec.get("prompt"),
                          "stable": spec.get("stable"), "candidate": spec.get("candidate"),
                          "phase": decision.phase, "step": decision.step_index, "weight": decision.weight,
                          "reason": decision.reason, "message": decision.message,
                          "gates": [g.to_dict() for g in decision.gates]})])


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change nothing but timestamps."""
    def key(s: Mapping[str, Any]) -> tuple[Any, ...]:
        conds = tuple((c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                      for c in s.get("conditions") or [])
        return (s.get("observedGeneration"), s.get("phase"), s.get("stepIndex"), s.get("weight"),
                s.get("startedAt"), s.get("stepStartedAt"), s.get("candidateRuns"), s.get("stableRuns"),
                s.get("gates"), (s.get("lastDecision") or {}).get("message"), conds)
    return key(old) == key(new)
