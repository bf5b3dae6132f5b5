"""A PromptRollout's status, conditions and Events from a canary decision (agentflow.prompts.canary). Pure.

Conditions, for kstatus (Flux, Argo CD, ``kubectl wait``) and people::

    phase                 Ready    Reconciling   Stalled   Rollout (reason = the decision's)
    WaitingForEvaluation  False    True          -         False
    Progressing           False    True          -         True
    Promoted              True     -             -         True
    Paused                False    -             True      False
    RolledBack, Failed    False    -             True      False

Events: one per decision that changes something (Start, Advance, Promote: Normal; Rollback, Pause, Fail:
Warning), the message with the numbers. A Wait makes no Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..prompts.canary import Decision

__all__ = ["decision_event", "rollout_conditions", "rollout_status"]

_WARNING = frozenset({"Rollback", "Pause", "Fail"})


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int | None, now_iso: str,
               old: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == type_), None)
    since = previous.get("lastTransitionTime") if previous is not None and previous.get("status") == status else None
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now_iso, "observedGeneration": generation}


def rollout_conditions(phase: str, reason: str, message: str, generation: int | None, now_iso: str,
                       old: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The conditions of a rollout in ``phase`` (see the module's table); lastTransitionTime kept when a
    condition's status did not change."""
    def cond(type_: str, ok: bool) -> dict[str, Any]:
        return _condition(type_, ok, reason, message, generation, now_iso, old)

    out = [cond("Ready", phase == "Promoted"), cond("Rollout", phase in ("Progressing", "Promoted"))]
    if phase in ("WaitingForEvaluation", "Progressing"):
        out.append(cond("Reconciling", True))
    elif phase in ("Paused", "RolledBack", "Failed"):
        out.append(cond("Stalled", True))
    return out


def rollout_status(decision: Decision, *, generation: int | None, now_iso: str, started_at: str | None,
                   step_started_at: str | None, candidate_runs: int, stable_runs: int,
                   old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status a decision leaves (a merge patch: every field the operator owns is written)."""
    old = old if old and old.get("observedGeneration") == generation else {}
    last = old.get("lastDecision") if decision.action == "Wait" else None
    if not isinstance(last, Mapping):
        last = {"action": decision.action, "reason": decision.reason, "message": decision.message, "at": now_iso}
    return {
        "observedGeneration": generation,
        "phase": decision.phase,
        "stepIndex": decision.step_index,
        "weight": decision.weight,
        "startedAt": started_at,
        "stepStartedAt": step_started_at,
        "candidateRuns": candidate_runs,
        "stableRuns": stable_runs,
        "gates": [g.to_dict() for g in decision.gates] if decision.gates else old.get("gates") or [],
        "lastDecision": dict(last),
        "conditions": rollout_conditions(decision.phase, decision.reason, decision.message, generation, now_iso,
                                         old.get("conditions") or []),
    }


def decision_event(decision: Decision) -> tuple[str, str, str]:
    """(type, reason, message) of the Event a decision makes."""
    reason = {"Start": "RolloutStarted", "Advance": "RolloutAdvanced", "Promote": "RolloutPromoted",
              "Rollback": "RolloutRolledBack", "Pause": "RolloutPaused", "Fail": "RolloutFailed"}.get(
        decision.action, decision.reason)
    return ("Warning" if decision.action in _WARNING else "Normal"), reason, decision.message
