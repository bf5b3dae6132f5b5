"""NATS subjects of AgentFlow events (pure).

Every event is published on ``agentflow.<namespace>.<workflow>.<type>``:

    namespace   the Workflow's namespace: a Kubernetes DNS label ([a-z0-9-], at most 63), a valid NATS token as is
    workflow    the Workflow's name: a DNS subdomain, which may hold dots; a dot would split the token, so each
                '.' is written '_' (never part of a Kubernetes name, so the escape is reversible):
                Workflow ``report.daily`` is the token ``report_daily``
    type        the journal event type as the journal names it (``StepSucceeded``, ``RunFinished``, ...), or
                ``PhaseChanged`` for a status transition of the Workflow

Anything else is refused with a :class:`SubjectError` naming the field, so no name can inject a ``*``, ``>``,
a space or an extra token into a subject, and one namespace's events can never land under another's
``agentflow.<namespace>.>``, the subject a tenant's NATS permissions are written against (README, Events).
"""

from __future__ import annotations

import re

__all__ = [
    "PHASE_TYPE",
    "PREFIX",
    "SubjectError",
    "filter_subject",
    "parse_subject",
    "subject",
    "workflow_name",
    "workflow_token",
]

PREFIX = "agentflow"
PHASE_TYPE = "PhaseChanged"
"""The type token of a status transition (a Workflow's phase changed)."""

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_WORKFLOW = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_WORKFLOW_TOKEN = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")


class SubjectError(ValueError):
    """A namespace, workflow name or event type cannot be part of a subject; the message names which."""


def _namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or len(namespace) > 63 or not _NAMESPACE.match(namespace):
        raise SubjectError(f"namespace {namespace!r} is not a Kubernetes namespace name (a DNS label: lowercase "
                           "letters, digits and '-', at most 63 characters, starting and ending with a letter or "
                           "digit)")
    return namespace


def workflow_token(name: str) -> str:
    """The subject token of Workflow ``name`` (its dots written as '_')."""
    if not isinstance(name, str) or len(name) > 253 or not _WORKFLOW.match(name) or ".." in name:
        raise SubjectError(f"workflow {name!r} is not a Kubernetes resource name (a DNS subdomain: lowercase "
                           "letters, digits, '-' and '.', at most 253 characters)")
    return name.replace(".", "_")


def workflow_name(token: str) -> str:
    """The Workflow name a subject token stands for (the inverse of :func:`workflow_token`)."""
    if not _WORKFLOW_TOKEN.match(token):
        raise SubjectError(f"subject token {token!r} is not a Workflow name written by AgentFlow")
    return token.replace("_", ".")


def _type(event_type: str) -> str:
    if not isinstance(event_type, str) or not _TYPE.match(event_type):
        raise SubjectError(f"event type {event_type!r} is not a journal event type (a letter, then letters and "
                           "digits, at most 64)")
    return event_type


def subject(namespace: str, workflow: str, event_type: str) -> str:
    """``agentflow.<namespace>.<workflow>.<type>``; SubjectError naming the field that cannot be in one."""
    return f"{PREFIX}.{_namespace(namespace)}.{workflow_token(workflow)}.{_type(event_type)}"


def filter_subject(namespace: str | None = None, workflow: str | None = None) -> str:
    """The subject filter of every event of ``workflow`` in ``namespace`` (None: any)."""
    ns = "*" if namespace is None else _namespace(namespace)
    wf = "*" if workflow is None else workflow_token(workflow)
    return f"{PREFIX}.{ns}.{wf}.*"


def parse_subject(value: str) -> tuple[str, str, str]:
    """(namespace, workflow, type) of a subject made by :func:`subject`."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise SubjectError(f"subject {value!r} is not an AgentFlow event subject ({PREFIX}.NAMESPACE.WORKFLOW.TYPE)")
    return _namespace(parts[1]), workflow_name(parts[2]), _type(parts[3])
