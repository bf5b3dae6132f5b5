"""Corrections to kopf's behaviour that the operator depends on, applied once before ``kopf.operator`` runs.

A namespace created while the operator starts is never served (kopf 1.45, ``--namespace`` with a pattern):
kopf's namespace observer lists the namespaces, then starts its watch-stream, which lists them *again* and
watches from that second list's resourceVersion; the events of the second list (type ``None``) are dropped by
``process_discovered_namespace_event``. A namespace created between the two lists is therefore in no list kopf
reads and in no watch event it receives: its Workflows are not driven until something modifies the namespace
itself (seen in CI on a loaded node: a run created 0.1 s after the operator became ready waited 180 s, until the
namespace was deleted). :func:`apply` makes the second list count: revising the namespaces from a listed body is
idempotent (a namespace already known is added again, a terminating one with its conditions is dropped again).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any, cast

import kopf
from kopf._cogs.structs import dicts
from kopf._core.reactor import observation

_original = observation.process_discovered_namespace_event


async def process_discovered_namespace_event(*, raw_event: Any, namespaces: Any, insights: Any,
                                             **kwargs: Any) -> None:
    """kopf's own, except that a listed namespace (type ``None``) is revised too."""
    if raw_event["type"] is not None:
        await _original(raw_event=raw_event, namespaces=namespaces, insights=insights, **kwargs)
        return
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def apply() -> None:
    """Patch kopf (idempotent). Checked against kopf 1.45: a kopf without these names fails loudly at start."""
    if observation.process_discovered_namespace_event is process_discovered_namespace_event:
        return
    if not callable(getattr(observation, "revise_namespaces", None)):
        raise RuntimeError(f"kopf {importlib.metadata.version('kopf')}: agentflow.controller.kopf_fixes no longer "
                           "matches kopf's namespace observer; check whether the fix is still needed")
    observation.process_discovered_namespace_event = process_discovered_namespace_event


ESSENCE_METADATA = ("labels", "annotations", "ownerReferences")
"""What of ``metadata`` kopf's essence keeps (labels, annotations) or its key naming reads (ownerReferences)."""


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, building the same essence from a shallow view of the object without its
    status and the metadata the essence drops (unless an extra field of a handler asks for them)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[dicts.FieldSpec] | None = None) -> kopf.BodyEssence:
        fields = list(extra_fields or [])
        reached = {dicts.parse_field(field)[0] for field in fields if dicts.parse_field(field)}
        lean: dict[str, Any] = {key: value for key, value in body.items()
                                if key not in ("metadata", "status") or key in reached}
        if "metadata" not in reached:
            meta = body.get("metadata") or {}
            lean["metadata"] = {key: meta[key] for key in ESSENCE_METADATA if key in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=fields)
