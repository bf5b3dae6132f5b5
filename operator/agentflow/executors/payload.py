"""The attempt payload: what a process that runs one attempt is given (a step pod, a step subprocess).

::

    {"request": StepRequest.to_dict(), "manifests": "the run's manifests as YAML", "workflow": "NAME"}

The operator stores it for the pod to fetch (and the gateway reads it to attribute the pod's calls); the
local runner's SubprocessExecutor writes it to the child's stdin. :func:`load_payload` reads it back and
names the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import StepRequest
from agentflow.models import Catalog, ManifestError, Workflow
from agentflow.models.manifests import parse_documents, parse_yaml

__all__ = ["PayloadError", "attempt_payload", "load_payload"]


class PayloadError(ValueError):
    """The payload is not an attempt payload; the message names the bad field."""


def attempt_payload(request: StepRequest, manifests: str, workflow: str) -> dict[str, Any]:
    return {"request": request.to_dict(), "manifests": manifests, "workflow": workflow}


def load_payload(text: str | Mapping[str, Any]) -> tuple[StepRequest, Catalog, Workflow]:
    """(StepRequest, Catalog, Workflow) from the JSON payload (text or already decoded)."""
    if isinstance(text, str):
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise PayloadError(f"the payload is not JSON: {exc}") from exc
    else:
        payload = text
    if not isinstance(payload, Mapping):
        raise PayloadError("the payload must be a JSON object with request, manifests and workflow")
    for field, kind in (("request", Mapping), ("manifests", str), ("workflow", str)):
        if not isinstance(payload.get(field), kind):
            raise PayloadError(
                f"payload field {field!r} is missing or not a {'object' if kind is Mapping else 'string'}"
            )
    try:
        request = StepRequest.from_dict(payload["request"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"payload field 'request' is malformed: {exc!r}") from exc
    try:
        loaded = parse_documents(parse_yaml(payload["manifests"], "<manifests>"))
    except ManifestError as exc:
        raise PayloadError(f"payload field 'manifests' does not parse: {exc}") from exc
    catalog = Catalog()
    workflows = []
    for item in loaded:
        if isinstance(item.resource, Workflow):
            workflows.append(item.resource)
        else:
            catalog.add(item.resource)
    named = [w for w in workflows if w.metadata.name == payload["workflow"]]
    if len(named) != 1:
        raise PayloadError(f"the manifests hold {len(named)} Workflow(s) named {payload['workflow']!r}, expected 1")
    return request, catalog, named[0]
