"""Ready conditions of Agents, PromptVersions, ToolPolicies and Budgets.

The same validation `agentflow validate` runs, plus references to things
that must exist in the namespace (an Agent's tools in some ToolPolicy, a
canary's baseline PromptVersion), and a PromptVersion's place in its family's rollout (``status.rollout``: role,
weight, the family's stable and candidate versions, from spec.canary or the family's PromptRollout and the weight
it reached; a family with two candidates, or a canary and a PromptRollout, is an invalid spec). PromptRollouts'
own status is agentflow.services.canary's.
For kstatus (Flux, `kubectl wait`)::

    valid                 Ready=True                                   Current
    a missing reference   Ready=False, Reconciling=True (it may come)  InProgress
    an invalid spec       Ready=False, Stalled=True (only a new spec   Failed
                          helps)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..models import Agent, Catalog, ManifestError, PromptVersion, parse_resource
from ..models.manifests import format_path
from ..prompts.rollout import RolloutError, rollout_of
from ..validation import check_resource


def _condition(ok: bool, reason: str, message: str, generation: int | None, now: float,
               type: str = "Ready") -> dict[str, Any]:
    return {
        "type": type,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "observedGeneration": generation,
    }


_READINESS = frozenset({"Ready", "Stalled", "Reconciling"})


def check_dependent(body: Mapping[str, Any], catalog: Catalog, now: float) -> dict[str, Any]:
    """The status of a non-Workflow resource: Ready True, or False with every problem. Conditions of other types
    (an Agent's Drifting: agentflow.services.quality) are kept as they are."""
    status = _readiness(body, catalog, now)
    others = [c for c in (body.get("status") or {}).get("conditions") or []
              if isinstance(c, Mapping) and c.get("type") not in _READINESS]
    status["conditions"] = status["conditions"] + others
    return status


def _readiness(body: Mapping[str, Any], catalog: Catalog, now: float) -> dict[str, Any]:
    generation = body.get("metadata", {}).get("generation")
    try:
        resource = parse_resource(body)
    except ManifestError as exc:
        message = "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
        return _not_ready("InvalidSpec", message, generation, now)
    problems = [f"{format_path(path)}: {msg}" for path, msg in check_resource(resource, catalog)]
    if isinstance(resource, Agent):
        for tool in resource.spec.tools:
            if catalog.find_tool(tool) is None:
                problems.append(f"spec.tools: tool {tool!r} is declared in no ToolPolicy of this namespace")
    rollout: dict[str, Any] | None = None
    if isinstance(resource, PromptVersion) and not problems:
        rollout, problem = _rollout(resource, catalog)
        problems.extend([problem] if problem else [])
    if problems:
        reason = "MissingReference" if "declared in no" in problems[0] else "InvalidSpec"
        status = _not_ready(reason, "; ".join(problems), generation, now)
        if isinstance(resource, PromptVersion):
            status["rollout"] = None  # a merge patch: the last known place goes away
        return status
    status = {"observedGeneration": generation,
                              "conditions": [_condition(True, "Valid", f"{resource.kind} is valid", generation, now)]}
    if rollout is not None:
        status["rollout"] = rollout
    return status


def _rollout(prompt: PromptVersion, catalog: Catalog) -> tuple[dict[str, Any] | None, str | None]:
    """The version's place in its family's rollout (status.rollout), or the problem of the family's state."""
    family = prompt.spec.prompt
    try:
        state = rollout_of(family, {**catalog.prompts, prompt.metadata.name: prompt}.values(),
                           catalog.rollouts.values())
    except RolloutError as exc:
        return None, f"spec.canary: {exc}"
    name = prompt.metadata.name
    out: dict[str, Any] = {"family": family, "role": state.role(name), "weight": state.weight(name),
                           "stable": state.stable}
    if state.candidate is not None:
        out["candidate"] = state.candidate
    return out, None


def _not_ready(reason: str, message: str, generation: int | None, now: float) -> dict[str, Any]:
    """Ready=False, and Stalled (an invalid spec) or Reconciling (waiting for a reference) for kstatus."""
    second = "Reconciling" if reason == "MissingReference" else "Stalled"
    return {"observedGeneration": generation,
            "conditions": [_condition(False, reason, message, generation, now),
                           _condition(True, reason, message, generation, now, type=second)]}
