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
from typing import Any

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
