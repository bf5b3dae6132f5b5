"""What an approval step's notifications send now: PURE (no clock, no I/O; the caller gives ``now``).

::

    due(wait, now, done) -> Plan(sends, next_at)

    notify      key notify:CHANNEL          the first group, once, as soon as the step waits
    remind      key remind-K:CHANNEL        the first group, K = whole remindEvery periods waited (K >= 1), only
                                            once the first notice is done; periods missed while the operator was
                                            down are not sent one by one: the current one is
    escalate    key escalate:CHANNEL        the escalation group, once, from escalateAfter on

A send is keyed per channel (``email``, ``webhook``), so a webhook that keeps failing never re-sends the
e-mail that went out. ``done`` is every key whose outcome is recorded durably (sent, or given up after its
retries): the service records each outcome in PostgreSQL before it counts, so a restarted operator sends
nothing twice that it recorded, and everything it did not record again (at least once). ``next_at`` is when the
next send falls due (None: nothing more will), the reconciler's wake-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from typing import Literal

__all__ = ["CHANNELS", "Kind", "Plan", "Send", "Wait", "due"]

Channel = Literal["email", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "webhook")
Kind = Literal["notify", "remind", "escalate"]


@dataclasses.dataclass(frozen=True)
class Wait:
    """One approval node waiting since ``since`` (the journal's ApprovalRequested time), and its schedule."""

    node: str
    since: float
    first: Sequence[Channel]
    """The first group's channels (its e-mail recipients, its webhook), in CHANNELS order."""
    remind_every: float | None = None
    escalate_after: float | None = None
    escalation: Sequence[Channel] = ()
    """The escalation group's channels."""


@dataclasses.dataclass(frozen=True)
class Send:
    node: str
    kind: Kind
    number: int
    """The reminder's period (1, 2, ...); 0 for notify and escalate."""
    channel: Channel

    @property
    def key(self) -> str:
        head = f"remind-{self.number}" if self.kind == "remind" else self.kind
        return f"{head}:{self.channel}"

    @property
    def escalation(self) -> bool:
        return self.kind == "escalate"


@dataclasses.dataclass(frozen=True)
class Plan:
    sends: tuple[Send, ...]
    next_at: float | None


def due(wait: Wait, now: float, done: Collection[str]) -> Plan:
    """The sends due at ``now`` for ``wait`` that ``done`` does not hold, and when the next one falls due."""
    sends: list[Send] = []
    wake: list[float] = []
    waited = max(0.0, now - wait.since)
    for channel in wait.first:
        notice = Send(wait.node, "notify", 0, channel)
        if notice.key not in done:
            sends.append(notice)
            continue
        if wait.remind_every is None:
            continue
        period = math.floor(waited / wait.remind_every)
        if period >= 1:
            reminder = Send(wait.node, "remind", period, channel)
            if reminder.key not in done:
                sends.append(reminder)
        wake.append(wait.since + (period + 1) * wait.remind_every)
    if wait.escalate_after is not None:
        at = wait.since + wait.escalate_after
        for channel in wait.escalation:
            escalation = Send(wait.node, "escalate", 0, channel)
            if escalation.key in done:
                continue
            if now >= at:
                sends.append(escalation)
            else:
                wake.append(at)
    return Plan(tuple(sends), min(wake) if wake else None)
