"""Ready conditions of Agents, PromptVersions, ToolPolicies and Budgets.

The same validation `agentflow validate` runs, plus references to things
that must exist in the namespace (an Agent's tools in some ToolPolicy, a
canary's baseline PromptVersion).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..models import Agent, Catalog, ManifestError, parse_resource
from ..models.manifests import format_path
from ..validation import check_resource


def _condition(ok: bool, reason: str, message: str, generation: int | None, now: float) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "observedGeneration": generation,
    }


def check_dependent(body: Mapping[str, Any], catalog: Catalog, now: float) -> dict[str, Any]:
    """The status of a non-Workflow resource: Ready True, or False with every problem."""
    generation = body.get("metadata", {}).get("generation")
    try:
        resource = parse_resource(body)
    except ManifestError as exc:
        message = "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
        return {"observedGeneration": generation,
                "conditions": [_condition(False, "InvalidSpec", message, generation, now)]}
    problems = [f"{format_path(path)}: {msg}" for path, msg in check_resource(resource, catalog)]
    if isinstance(resource, Agent):
        for tool in resource.spec.tools:
            if catalog.find_tool(tool) is None:
                problems.append(f"spec.tools: tool {tool!r} is declared in no ToolPolicy of this namespace")
    if problems:
        return {"observedGeneration": generation,
                "conditions": [_condition(False, "MissingReference" if "declared in no" in problems[0]
                                          else "InvalidSpec", "; ".join(problems), generation, now)]}
    return {"observedGeneration": generation,
            "conditions": [_condition(True, "Valid", f"{resource.kind} is valid", generation, now)]}
