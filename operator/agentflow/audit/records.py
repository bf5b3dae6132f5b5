"""What the audit chain holds, and who may append to it. Pure: no I/O, no clock.

Every model call, tool call, approval and policy decision becomes one :class:`AuditEvent`. The writer
(agentflow.storage.audit in PostgreSQL) gives each row a sequence number and the SHA-256 of the previous
row, so any modified, deleted, inserted or reordered row is found by ``agentflow audit verify``.

Producers take an :class:`AuditSink` (``None`` when auditing is off) and never build the chain themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

__all__ = ["AUDIT_KINDS", "AuditEvent", "AuditKind", "AuditSink"]

AuditKind = Literal["model_call", "tool_call", "approval", "policy_decision", "redaction", "injection",
                    "memory_forget"]
AUDIT_KINDS: tuple[str, ...] = ("model_call", "tool_call", "approval", "policy_decision", "redaction", "injection",
                                "memory_forget")
"""memory_forget: long-term memories deleted (agentflow.memory): by id, by Agent or by subject (erasure)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    """One auditable action.

    ``actor``: who acted ("gateway", "operator", "step-pod", "user:alice", "agent:NS/NAME").
    ``subject``: what it acted on, most specific first, e.g. "NS/WORKFLOW/NODE#ATTEMPT" or "NS/WORKFLOW".
    ``decision``: "allow", "deny", "flag", "block", "quarantine", "approved", "rejected", "ok" or an error type.
    ``data``: JSON details (model, tokens, cost, tool, policies considered, evidence); never secrets or PII.
    ``at``: RFC 3339 time given by the producer (the audit layer reads no clock).
    """

    kind: AuditKind
    actor: str
    namespace: str
    subject: str
    decision: str
    at: str
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "actor": self.actor, "namespace": self.namespace, "subject": self.subject,
                "decision": self.decision, "at": self.at, "data": dict(self.data)}


class AuditSink(Protocol):
    """Appends events to the audit chain, in order, durably before returning."""

    async def append(self, events: Sequence[AuditEvent]) -> None: ...
