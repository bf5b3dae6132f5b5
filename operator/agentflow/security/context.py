"""What an executor needs to apply an Agent's PII and injection policies, and the audit events it records.

    SecurityContext(detector, keys, store)    built once by whoever builds the executor
      .redaction(policy, run_id)              a Redaction for one attempt (None when the policy is off),
                                              primed with the run's stored token map when there is a store
      .keep(run_id, redaction)                merge the attempt's new tokens into the run's sealed map
    redaction_event / injection_event         pure builders of the AuditEvents (counts and evidence,
                                              never the values)

Defaults: the Presidio detector, an ephemeral master key, no store (see agentflow.security.vault for the
local runner's and the pods' keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from agentflow.audit.records import AuditEvent
from agentflow.models.agent import InjectionPolicy, PiiPolicy

from .injection import Report
from .pii import Detector, PresidioDetector, Redaction
from .vault import RunKeys, TokenMapStore

DEFAULT_PII = PiiPolicy()
DEFAULT_INJECTION = InjectionPolicy()


@dataclasses.dataclass(frozen=True)
class SecurityContext:
    detector: Detector = dataclasses.field(default_factory=PresidioDetector)
    keys: RunKeys = dataclasses.field(default_factory=RunKeys.ephemeral)
    store: TokenMapStore | None = None

    def redaction(self, policy: PiiPolicy, run_id: str) -> Redaction | None:
        """A Redaction for one attempt of ``run_id``, or None when ``policy.redact`` is off."""
        if not policy.redact:
            return None
        run_key = self.keys.run_key(run_id)
        known = self.store.load(run_id, run_key) if self.store is not None else None
        return Redaction(self.detector, run_key, policy.entities, policy.min_score, known)

    def keep(self, run_id: str, redaction: Redaction) -> None:
        """Merge the tokens ``redaction`` created into the run's sealed map (no-op without a store)."""
        if self.store is not None and len(redaction.tokens):
            self.store.merge(run_id, self.keys.run_key(run_id), redaction.tokens)


def redaction_event(
    *, actor: str, namespace: str, subject: str, at: str, target: str, redaction: Redaction, direction: str
) -> AuditEvent:
    """``redaction``: how many values of each entity type were replaced (or restored) for ``target``."""
    data: dict[str, Any] = {"target": target, "direction": direction, "counts": dict(sorted(redaction.counts.items()))}
    if direction == "restore":
        data = {"target": target, "direction": direction, "restored": redaction.restored}
    return AuditEvent("redaction", actor, namespace, subject, "ok", at, data)


def injection_event(
    *,
    actor: str,
    namespace: str,
    subject: str,
    at: str,
    report: Report,
    action: str,
    threshold: float,
    evidence: Sequence[Mapping[str, Any]],
) -> AuditEvent:
    """``injection``: the score, the policy's decision and the (redacted) evidence of one screening."""
    data = {"source": report.source, "score": report.score, "threshold": threshold,
            "evidence": [dict(e) for e in evidence]}
    return AuditEvent("injection", actor, namespace, subject, action, at, data)
