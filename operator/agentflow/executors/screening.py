"""The security side of one attempt: PII redaction, prompt-injection screening, and their audit events.

:class:`Screening` is built per attempt and collects the audit events it records (``events``); the step
code appends them with :meth:`StepServices.record` when the attempt ends, whatever its outcome.

A StepRequest with ``screening: flag`` re-runs an attempt a human reviewed after its input was quarantined
(agentflow.engine.run: quarantine review): ``block`` and ``quarantine`` decisions of that attempt become
``flag``, still recorded with their evidence.

Injection evidence is redacted before it is cut into snippets: the text is screened as it is (the
decision), and when there are findings the evidence is taken from the redacted text, so no part of a
detected value reaches the audit log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentflow.audit.records import AuditEvent
from agentflow.models.agent import InjectionPolicy, PiiPolicy
from agentflow.security import Redaction, SecurityError, decide, injection_event, redaction_event, scan

from .attempt import StepServices, Who, fail


class Screening:
    def __init__(self, services: StepServices, who: Who, *, override: str | None = None) -> None:
        self.services = services
        self.who = who
        self.override = override
        self.events: list[AuditEvent] = []

    def _fields(self) -> dict[str, str]:
        return self.who.fields(self.services.clock)

    async def redaction(self, policy: PiiPolicy) -> Redaction | None:
        """A Redaction for this attempt (primed with the run's token map), None when the policy is off."""
        try:
            return await asyncio.to_thread(self.services.security.redaction, policy, self.who.run_id)
        except SecurityError as exc:
            raise fail(type(exc).__name__, f"PII redaction: {exc}", False) from exc

    async def keep(self, redaction: Redaction) -> None:
        """Store the attempt's new tokens in the run's sealed token map."""
        try:
            await asyncio.to_thread(self.services.security.keep, self.who.run_id, redaction)
        except (SecurityError, OSError) as exc:
            raise fail("TokenMapError", f"cannot store the run's PII token map: {exc}", True) from exc

    async def redact(self, redaction: Redaction, value: Any, target: str, direction: str) -> Any:
        """``value`` with its PII replaced by tokens; a redaction event when anything was replaced."""
        before = sum(redaction.counts.values())
        redacted = await asyncio.to_thread(redaction.redact, value)
        if sum(redaction.counts.values()) > before:
            self.events.append(redaction_event(**self._fields(), target=target, redaction=redaction,
                                               direction=direction))
        return redacted

    def restored(self, redaction: Redaction, value: Any, target: str) -> Any:
        """``value`` with the run's tokens given their values back; a redaction event when any was."""
        value = redaction.restore(value)
        if redaction.restored:
            self.events.append(redaction_event(**self._fields(), target=target, redaction=redaction,
                                               direction="restore"))
        return value

    async def screen(self, value: Any, source: str, policy: InjectionPolicy, pii: PiiPolicy) -> None:
        """Screen untrusted ``value``; record the decision; StepFailure when the policy blocks it."""
        report = scan(value, source)
        if not report.findings:
            return
        action = decide(report, policy.threshold, policy.action)
        if self.override == "flag" and action in ("block", "quarantine"):
            action = "flag"  # a human reviewed the quarantined input and let this attempt run
        evidence = await self._evidence(value, source, pii)
        self.events.append(injection_event(**self._fields(), report=report, action=action,
                                           threshold=policy.threshold, evidence=evidence))
        if action not in ("block", "quarantine"):
            return
        shown = "; ".join(f"{e['rule']} ({e['category']}) in {e['source']}: {e['snippet']!r}" for e in evidence[:5])
        if action == "quarantine":
            raise fail(
                "InjectionQuarantined",
                f"{source} quarantined for review: prompt-injection score {report.score:.2f} >= threshold "
                f"{policy.threshold} (Agent spec.injection.action: quarantine); evidence: {shown}. The step "
                "waits for a review: approve it (agentflow approve RUN STEP, or the agentflow.dev/approve "
                "annotation on a cluster) to run it again with findings flagged, or reject it to fail it",
            )
        raise fail(
            "InjectionDetected",
            f"{source}: prompt-injection score {report.score:.2f} >= threshold {policy.threshold} (Agent "
            f"spec.injection.action: block); evidence: {shown}",
        )

    async def _evidence(self, value: Any, source: str, pii: PiiPolicy) -> list[dict[str, Any]]:
        """The findings of ``value`` with their snippets cut from the redacted text (never a partial value).

        A redaction of its own (same run key: the same tokens), so the attempt's counts stay its own."""
        try:
            redaction = await asyncio.to_thread(self.services.security.redaction, pii, self.who.run_id)
        except SecurityError as exc:
            raise fail(type(exc).__name__, f"PII redaction of the injection evidence: {exc}", False) from exc
        if redaction is None:  # redaction is off for this Agent: the evidence is the text as it is
            return [f.to_dict() for f in scan(value, source).findings]
        redacted = await asyncio.to_thread(redaction.redact, value)
        return [f.to_dict() for f in scan(redacted, source).findings]
