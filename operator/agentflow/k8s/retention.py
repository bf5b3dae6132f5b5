"""When a finished Workflow is deleted (pure: the body, the operator's default and the time are given).

::

    run_ttl(body, default) -> (RunTtl | None, source)      the Workflow's own, its template's, or the default
    expiry(body, default) -> Expiry | None                 when it may be deleted; None: kept (or not finished)
    parse_ttl_flag(text) -> RunTtl                         agentflow operator --ttl-seconds-after-finished
    expired_event(workflow, expiry, now) -> Event body     the Normal TTLExpired Event posted before deleting
    watched(namespace, patterns)                           whether --namespace patterns (kopf's globs) cover it

Which TTL applies, first found: the Workflow's ``spec.ttlSecondsAfterFinished``; for a Workflow made from a
WorkflowTemplate, the one of the spec it was resolved to (``status.templateSpec``: the template's, as it was
when the run started); the operator's default. Whichever is found replaces the others as a whole (Argo's
ttlStrategy does the same): a phase it does not name is kept.

The finish time is ``status.finishedAt`` (the journal's RunFinished, written by the reconciler); a Workflow
that failed for an invalid spec never ran and has none: the Failed condition's lastTransitionTime stands in.
Both are on the object, so a restarted operator computes the same deadline: nothing is kept in memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ..models import Phase, RunTtl
from ..models.limits import MAX_TTL_SECONDS
from .events import event_body
from .podspec import Owner
from .status import rfc3339

__all__ = ["FINISHED", "Expiry", "expired_event", "expiry", "parse_ttl_flag", "plain_namespaces", "run_ttl",
           "watched"]

FINISHED = frozenset({Phase.succeeded.value, Phase.failed.value, Phase.cancelled.value})
SOURCE_SPEC = "spec.ttlSecondsAfterFinished"
SOURCE_TEMPLATE = "the WorkflowTemplate's ttlSecondsAfterFinished"
SOURCE_DEFAULT = "the operator's default (--ttl-seconds-after-finished)"


@dataclasses.dataclass(frozen=True)
class Expiry:
    """When a finished Workflow may be deleted, and why."""

    phase: str
    finished_at: float
    """Seconds since the epoch."""
    seconds: int
    source: str
    """Where the TTL came from (SOURCE_*)."""

    @property
    def at(self) -> float:
        return self.finished_at + self.seconds

    def due(self, now: float) -> bool:
        return now >= self.at

    def describe(self) -> str:
        return (f"finished {self.phase} at {rfc3339(self.finished_at)}; {self.source} keeps a {self.phase} run "
                f"{self.seconds}s")


def _ttl(value: Any) -> RunTtl | None:
    if not isinstance(value, Mapping):
        return None
    try:
        return RunTtl.model_validate(value)
    except ValidationError:  # the CRD's schema refuses it first; an object written around it is kept
        return None


def run_ttl(body: Mapping[str, Any], default: RunTtl | None) -> tuple[RunTtl | None, str]:
    """The TTL that applies to this Workflow and where it came from (see the module docstring)."""
    spec = body.get("spec") or {}
    if isinstance(spec, Mapping) and spec.get("ttlSecondsAfterFinished") is not None:
        return _ttl(spec["ttlSecondsAfterFinished"]), SOURCE_SPEC
    pinned = (body.get("status") or {}).get("templateSpec")
    if isinstance(pinned, Mapping) and pinned.get("ttlSecondsAfterFinished") is not None:
        return _ttl(pinned["ttlSecondsAfterFinished"]), SOURCE_TEMPLATE
    return default, SOURCE_DEFAULT


def _time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def finished_at(status: Mapping[str, Any]) -> float | None:
    """When the run finished: status.finishedAt, else (an invalid spec) the Failed condition's transition."""
    at = _time(status.get("finishedAt"))
    if at is not None:
        return at
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Failed" and cond.get("status") == "True":
            return _time(cond.get("lastTransitionTime"))
    return None


def expiry(body: Mapping[str, Any], default: RunTtl | None) -> Expiry | None:
    """When this Workflow may be deleted; None while it has not finished, when no TTL names its phase, or when
    its finish time is not on its status yet."""
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase not in FINISHED:
        return None
    ttl, source = run_ttl(body, default)
    seconds = ttl.seconds(phase) if ttl is not None else None
    at = finished_at(status)
    if seconds is None or at is None:
        return None
    return Expiry(phase, at, seconds, source)


def parse_ttl_flag(text: str) -> RunTtl:
    """``N`` (every finished phase) or ``PHASE=N,...`` (succeeded, failed, cancelled); ValueError naming what is
    wrong. An empty text is no default (runs are kept)."""
    text = text.strip()
    if not text:
        return RunTtl()
    phases = ("succeeded", "failed", "cancelled")
    if "=" not in text:
        seconds = _seconds(text, "")
        return RunTtl(succeeded=seconds, failed=seconds, cancelled=seconds)
    values: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in phases:
            raise ValueError(f"{item.strip()!r}: expected PHASE=SECONDS with PHASE one of {', '.join(phases)}")
        if key in values:
            raise ValueError(f"{key} is given twice")
        values[key] = _seconds(value, f"{key}=")
    return RunTtl.model_validate(values)


def _seconds(text: str, what: str) -> int:
    try:
        seconds = int(text.strip())
    except ValueError:
        raise ValueError(f"{what}{text.strip()!r}: expected a whole number of seconds") from None
    if not 0 <= seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"{what}{seconds}: out of range; give 0 to {MAX_TTL_SECONDS} seconds")
    return seconds


def expired_event(workflow: Mapping[str, Any], expired: Expiry, now: float) -> dict[str, Any]:
    """The Normal ``TTLExpired`` Event on a Workflow the operator is about to delete."""
    meta = workflow["metadata"]
    owner = Owner(str(workflow.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", meta["name"], meta["uid"])
    message = (f"deleting the workflow: {expired.describe()}; its journal, results and call log are collected, "
               "its audit records kept")
    return event_body(owner, meta["namespace"], "Normal", "TTLExpired", message, rfc3339(now))


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def plain_namespaces(patterns: Sequence[str]) -> bool:
    """Whether every --namespace is a namespace's name (listed one by one), not a glob (listed cluster-wide)."""
    return all(_NAMESPACE.match(p) for p in patterns)


def _matches(name: str, pattern: str) -> bool:
    """kopf's namespace pattern (kopf._cogs.structs.references.match_namespace): comma-separated globs, ``!`` ones
    exclude; a first exclusive glob implies a ``*`` before it; a later inclusive glob re-includes only what the
    first one matched."""
    globs = [g.strip() for g in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matches = first = fnmatch.fnmatchcase(name, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matches = matches and not fnmatch.fnmatchcase(name, glob.lstrip("!"))
        else:
            matches = matches or (first and fnmatch.fnmatchcase(name, glob))
    return matches


def watched(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether an operator started with ``--namespace`` ``patterns`` watches ``namespace`` (none: every one)."""
    return not patterns or any(_matches(namespace, p) for p in patterns)
