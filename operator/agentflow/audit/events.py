"""Checking audit events before they are chained, and reading them from untrusted JSON. Pure.

An event is chained for good: a malformed one must be refused before it is appended, with an error
that names its field. :func:`check_event` checks an :class:`AuditEvent` a producer built;
:func:`pod_event_from_dict` reads one a step pod posted (the callback server sets who and what from
the pod's token, so the pod sends only ``kind``, ``decision``, ``at`` and ``data``).

Errors::

    AuditEventError(ValueError)   ``.field`` is the JSON path of the bad value, str() says what is wrong
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Any, cast

from ..engine.canonical import check_json
from .records import AUDIT_KINDS, AuditEvent, AuditKind

__all__ = [
    "MAX_TEXT_CHARS",
    "POD_EVENT_FIELDS",
    "AuditEventError",
    "check_event",
    "check_text",
    "pod_event_from_dict",
    "rfc3339",
]

MAX_TEXT_CHARS = 1024
"""Longest actor, namespace, subject or decision accepted (details belong in ``data``)."""

POD_EVENT_FIELDS = ("kind", "decision", "at", "data")
"""What a step pod sends per event; actor, namespace and subject come from its token."""

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


class AuditEventError(ValueError):
    """An audit event that must not be chained; ``field`` is the path of the bad value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


def rfc3339(unix_seconds: float) -> str:
    """The RFC 3339 UTC time of a unix time the caller read (``2026-01-02T03:04:05.678901Z``)."""
    moment = dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_text(path: str, value: Any, *, empty_ok: bool = False) -> str:
    """``value`` if it can be an event's actor, namespace, subject or decision; AuditEventError naming ``path``."""
    if not isinstance(value, str):
        raise AuditEventError(path, f"must be a string, got {type(value).__name__}")
    if not value and not empty_ok:
        raise AuditEventError(path, "must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        raise AuditEventError(path, f"is {len(value)} characters long; at most {MAX_TEXT_CHARS} (put details in data)")
    if "\x00" in value:
        raise AuditEventError(path, "contains a NUL character, which PostgreSQL text cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditEventError(path, "is not valid UTF-8 (a lone surrogate)") from None
    return value


def _check_at(path: str, value: Any) -> str:
    text = check_text(path, value)
    if not _RFC3339.fullmatch(text):
        raise AuditEventError(path, f"must be an RFC 3339 time like 2026-01-02T03:04:05Z, got {text!r}")
    try:
        dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError as e:
        raise AuditEventError(path, f"is not a valid time: {e}") from None
    return text


def _check_kind(path: str, value: Any, allowed: Collection[str]) -> AuditKind:
    if value not in allowed:
        raise AuditEventError(path, f"must be one of {', '.join(allowed)}; got {value!r}")
    return cast(AuditKind, value)


def _check_data(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise AuditEventError(path, f"must be a JSON object, got {type(value).__name__}")
    try:
        check_json(value, path)
    except (TypeError, ValueError) as e:
        # check_json names the path inside data; report the field it names.
        message = str(e)
        field, sep, problem = message.partition(": ")
        raise AuditEventError(field if sep else path, problem if sep else message) from None
    return dict(value)


def check_event(event: AuditEvent, path: str = "event") -> None:
    """Raise AuditEventError naming the field unless ``event`` can be chained as it is."""
    _check_kind(f"{path}.kind", event.kind, AUDIT_KINDS)
    check_text(f"{path}.actor", event.actor)
    check_text(f"{path}.namespace", event.namespace, empty_ok=True)
    check_text(f"{path}.subject", event.subject)
    check_text(f"{path}.decision", event.decision)
    _check_at(f"{path}.at", event.at)
    _check_data(f"{path}.data", event.data)


def pod_event_from_dict(
    raw: Any, path: str, *, actor: str, namespace: str, subject: str, kinds: Collection[str]
) -> AuditEvent:
    """The event a step pod posted, with who and what set by the caller (from the pod's token).

    ``raw`` must be ``{kind, decision, at, data?}``; ``kinds`` are the kinds a pod may report.
    Raises AuditEventError naming the field (``path`` is prefixed, e.g. ``events[3]``).
    """
    if not isinstance(raw, Mapping):
        raise AuditEventError(path, f"must be an object {{kind, decision, at, data}}, got {type(raw).__name__}")
    for name in sorted(str(k) for k in raw.keys() - set(POD_EVENT_FIELDS)):
        if name in ("actor", "namespace", "subject"):
            raise AuditEventError(
                f"{path}.{name}", "is set by the server from the pod's token; do not send it"
            )
        raise AuditEventError(f"{path}.{name}", f"unexpected field; an event has {', '.join(POD_EVENT_FIELDS)}")
    for name in ("kind", "decision", "at"):
        if name not in raw:
            raise AuditEventError(f"{path}.{name}", "missing")
    return AuditEvent(
        kind=_check_kind(f"{path}.kind", raw["kind"], kinds),
        actor=actor,
        namespace=namespace,
        subject=subject,
        decision=check_text(f"{path}.decision", raw["decision"]),
        at=_check_at(f"{path}.at", raw["at"]),
        data=_check_data(f"{path}.data", raw.get("data", {})),
    )
