"""Who an approval step notifies, and when (``approval.notify``; issue 17).

::

    approval:
      message: "Refund ${{ inputs.amount }} EUR to ${{ inputs.customer }}?"
      approvers: [finance-leads]
      timeoutSeconds: 172800
      notify:
        emails: [lead@example.com]              # e-mail over the operator's SMTP relay
        webhookSecretRef: {name: approvals-slack, key: url}   # a Slack-compatible incoming webhook
        remindEvery: 4h                         # while still waiting
        escalateAfter: 1d                       # once, to a second group
        escalateTo:
          emails: [director@example.com]
          webhookSecretRef: {name: approvals-slack, key: escalation-url}

The webhook URL is a tenant secret: it lives in a Secret of the Workflow's own namespace, labelled
``agentflow.dev/credential: "true"`` like every Secret a tenant hands the operator, and the operator posts only
to hosts its allowlist names (``--notify-webhook-hosts``). Without ``emails``, the approvers that are e-mail
addresses (Kubernetes user names from OIDC often are) are the first group's recipients.

Durations are written ``1d2h30m15s`` (any of the units, in that order). What is sent when is decided by the pure
:mod:`agentflow.notify.plan`; the operator sends it (:mod:`agentflow.services.notifications`).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from . import limits
from .base import DNS_SUBDOMAIN, SECRET_KEY, Model

__all__ = ["EMAIL_PATTERN", "ApprovalNotify", "NotifyTarget", "WebhookSecretRef", "is_email", "parse_duration"]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"
"""An address without a display name, comments, quoting, spaces or line breaks: nothing a header could be forged
with."""
_EMAIL = re.compile(EMAIL_PATTERN)
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION = re.compile(DURATION_PATTERN)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MIN_REMIND_SECONDS = 60
"""Reminders closer together than a minute are noise (and a mail relay's rate limit)."""
MIN_ESCALATE_SECONDS = 60
MAX_RECIPIENTS = 50


def is_email(text: str) -> bool:
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


def parse_duration(text: str) -> int:
    """Seconds of ``1d2h30m15s`` (any of the units, in that order); ValueError naming the form otherwise."""
    if not text or not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration: write it as 1d2h30m15s (days, hours, minutes, seconds; any "
                         "of them, in that order), e.g. 30m or 4h")
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([dhms])", text))


def _bounded(text: str, least: int) -> str:
    seconds = parse_duration(text)
    if seconds < least:
        raise ValueError(f"{text!r} is shorter than the least allowed, {least}s")
    if seconds > limits.MAX_RUN_TIMEOUT_SECONDS:
        raise ValueError(f"{text!r} is longer than a run may wait (90d)")
    return text


class WebhookSecretRef(Model):
    """A key of a Secret in the Workflow's namespace holding a webhook URL."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Secret name."""
    key: str = Field(default="url", min_length=1, max_length=253, pattern=SECRET_KEY)
    """Key inside the Secret."""


class NotifyTarget(Model):
    """A group of recipients: e-mail addresses, a Slack-compatible incoming webhook, or both."""

    emails: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS,
                              json_schema_extra={"items": {"type": "string", "maxLength": 254,
                                                           "pattern": EMAIL_PATTERN}})
    """E-mail addresses (plain ``name@domain``, no display names), sent over the operator's SMTP relay."""
    webhook_secret_ref: WebhookSecretRef | None = None
    """A key of a Secret in the Workflow's namespace, labelled ``agentflow.dev/credential: "true"``, holding a
    Slack-compatible incoming-webhook URL (https; its host must be on the operator's --notify-webhook-hosts)."""

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for i, address in enumerate(value):
            if not is_email(address):
                raise ValueError(f"emails[{i}]: {address!r} is not a plain e-mail address (name@domain, no display "
                                 "name, spaces or line breaks)")
        if len(set(value)) != len(value):
            raise ValueError("emails lists an address twice")
        return value

    @property
    def empty(self) -> bool:
        return not self.emails and self.webhook_secret_ref is None


class ApprovalNotify(NotifyTarget):
    """Notify the approvers when the step starts waiting, remind them, escalate to a second group."""

    remind_every: str | None = Field(default=None, max_length=32, json_schema_extra={"pattern": DURATION_PATTERN})
    """Remind the first group this often while the step still waits (a duration such as 4h; at least 1m)."""
    escalate_after: str | None = Field(default=None, max_length=32, json_schema_extra={"pattern": DURATION_PATTERN})
    """Notify ``escalateTo`` once when nobody decided within this time (a duration such as 1d; at least 1m)."""
    escalate_to: NotifyTarget | None = None
    """The second group, notified once at ``escalateAfter`` (reminders go to the first group only)."""

    @field_validator("remind_every")
    @classmethod
    def _remind(cls, value: str | None) -> str | None:
        return None if value is None else _bounded(value, MIN_REMIND_SECONDS)

    @field_validator("escalate_after")
    @classmethod
    def _escalate(cls, value: str | None) -> str | None:
        return None if value is None else _bounded(value, MIN_ESCALATE_SECONDS)

    @model_validator(mode="after")
    def _pairs(self) -> ApprovalNotify:
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError("escalateAfter and escalateTo go together: give both or neither")
        if self.escalate_to is not None and self.escalate_to.empty:
            raise ValueError("escalateTo names no recipient: give emails or webhookSecretRef")
        return self

    @property
    def remind_every_seconds(self) -> int | None:
        return None if self.remind_every is None else parse_duration(self.remind_every)

    @property
    def escalate_after_seconds(self) -> int | None:
        return None if self.escalate_after is None else parse_duration(self.escalate_after)
