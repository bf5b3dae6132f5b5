"""The Agent status patch and Events of quality drift (agentflow.quality), pure.

An Agent carries ``Drifting`` next to its ``Ready`` (services.resources keeps conditions of other types when it
writes Ready, and this keeps Ready)::

    Drifting=True   reason QualityDrift  message: each drifting signal, e.g. "failure of PromptVersion
                                         summarize-v2 5.0% -> 15.2% over the last 140 attempt(s)"
    Drifting=False  reason Stable        once no signal of any of its PromptVersions drifts any more

Events on the Agent: Warning ``Drifting`` for each alarm, Normal ``DriftCleared`` when the condition goes False.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..quality import Alarm
from .previews import bounded

__all__ = ["DRIFTING", "alarm_event", "cleared_event", "drifting_status"]

DRIFTING = "Drifting"
_MESSAGE_CHARS = 1024


def drifting_status(current: Mapping[str, Any], alarms: Sequence[Alarm], *, now: str) -> dict[str, Any] | None:
    """The status patch that says ``alarms`` (the Agent's drifting signals now) on an Agent whose status is
    ``current``; None when its Drifting condition already says it (or says nothing and nothing drifts)."""
    conditions = [dict(c) for c in current.get("conditions") or [] if isinstance(c, Mapping)]
    before = next((c for c in conditions if c.get("type") == DRIFTING), None)
    if alarms:
        status, reason = "True", "QualityDrift"
        message = bounded("; ".join(a.message for a in alarms), _MESSAGE_CHARS)
    else:
        status, reason, message = "False", "Stable", "no quality signal of this Agent's PromptVersions drifts"
        if before is None:
            return None
    if before is not None and (before.get("status"), before.get("reason"), before.get("message")) == (
            status, reason, message):
        return None
    changed = before is None or before.get("status") != status
    condition = {"type": DRIFTING, "status": status, "reason": reason, "message": message,
                 "lastTransitionTime": now if changed or before is None else before.get("lastTransitionTime", now)}
    return {"conditions": [c for c in conditions if c.get("type") != DRIFTING] + [condition]}


def alarm_event(agent: str, alarm: Alarm) -> tuple[str, str, str]:
    """(type, reason, message) of the Event an alarm posts on its Agent."""
    return "Warning", DRIFTING, bounded(f"Agent {agent}: {alarm.message}", _MESSAGE_CHARS)


def cleared_event(agent: str) -> tuple[str, str, str]:
    return "Normal", "DriftCleared", f"Agent {agent}: no quality signal drifts any more"
