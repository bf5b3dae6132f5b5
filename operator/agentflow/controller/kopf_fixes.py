"""Corrections to kopf's behaviour that the operator depends on, applied once before ``kopf.operator`` runs.

A namespace created while the operator starts is never served (kopf 1.45, ``--namespace`` with a pattern):
kopf's namespace observer lists the namespaces, then starts its watch-stream, which lists them *again* and
watches from that second list's resourceVersion; the events of the second list (type ``None``) are dropped by
``process_discovered_namespace_event``. A namespace created between the two lists is therefore in no list kopf
reads and in no watch event it receives: its Workflows are not driven until something modifies the namespace
itself (seen in CI on a loaded node: a run created 0.1 s after the operator became ready waited 180 s, until the
namespace was deleted). :func:`apply` makes the second list count: revising the namespaces from a listed body is
idempotent (a namespace already known is added again, a terminating one with its conditions is dropped again).

Two costs of kopf's on every watch event, measured with py-spy in a burst of 1,000 single-step Workflows
(bench/README.md), are cut here too:

* :class:`LeanDiffBaseStorage`: kopf's ``DiffBaseStorage.build`` deep-copies the whole object (``managedFields``
  and the status included) to build an "essence" without its status and most metadata: 8.7 % of the operator's
  samples, for pods and Workflows alike. It hands kopf's own ``build`` only what the essence can contain: the same
  essence, without copying what it throws away (2.2 %).
* :class:`WatchJson`: kopf's watch streams decode each line with the standard ``json`` module (7.6-9.4 %); they get
  orjson (installed with :func:`apply`), and the objects they carry lose their ``managedFields``, which kopf
  would otherwise keep in memory for every live object (the largest part of the operator's memory in a burst).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf
import orjson
from kopf._cogs.clients import api
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


class WatchJson:
    """What kopf's API client (``kopf._cogs.clients.api``) calls ``json``: its watch streams decode each line with
    ``json.loads`` (9.4 % of the operator's samples in a burst of 1,000 Workflows); orjson decodes the same text to
    the same values about three times as fast. (An integer past 64 bits would become a float; the API server never
    sends one: it stores a custom object's numbers as int64 or float64.) A line orjson refuses goes to the
    standard decoder, which raises what kopf expects.

    The watched object's ``metadata.managedFields`` is dropped as the line is decoded: kopf keeps the latest body of
    every object it serves (a Workflow's daemon holds it while the run lives and until its TTL), and the field
    managers' map of every field each one set is about as large as the rest of the object; neither kopf nor the
    operator reads it (kopf patches with merge patches; the pod cache dropped it already). Bodies listed at start
    keep theirs until their next watch event."""

    @staticmethod
    def loads(text: str | bytes) -> Any:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            event = json.loads(text)
        obj = event.get("object") if isinstance(event, dict) else None
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        return event

    def __getattr__(self, name: str) -> Any:  # anything else kopf may use: the standard module
        return getattr(json, name)


def apply() -> None:
    """Patch kopf (idempotent). Checked against kopf 1.45: a kopf without these names fails loudly at start."""
    if observation.process_discovered_namespace_event is process_discovered_namespace_event:
        return
    decoder = getattr(api, "json", None)
    if not callable(getattr(observation, "revise_namespaces", None)) or not (
            decoder is json or isinstance(decoder, WatchJson)):
        raise RuntimeError(f"kopf {importlib.metadata.version('kopf')}: agentflow.controller.kopf_fixes no longer "
                           "matches kopf's namespace observer or API client; check whether the fixes are still needed")
    observation.process_discovered_namespace_event = process_discovered_namespace_event
    setattr(api, "json", WatchJson())  # noqa: B010 (a module attribute kopf does not export)


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
