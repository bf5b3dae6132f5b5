"""Free-form JSON values of a manifest (inputs): can the journal hold them, and are they small enough.

The journal hashes canonical JSON (agentflow.engine.canonical), which has no NaN or infinity, no integer
outside the 64-bit range and no lone surrogate; a manifest that carried one would pass the models (inputs
are free-form) and then stop the run when it is first journaled. This finds them first, with their path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agentflow.engine.canonical import canonical_json
from agentflow.models.limits import MAX_DEPTH, MAX_INPUTS_BYTES

from .findings import Finding, PathParts

__all__ = ["json_value_findings"]

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what the journal's encoder (orjson) can hold


def _problem(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            return f"integer {value} is out of the 64-bit range; write it as a string"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a JSON number (NaN and infinity are not allowed); use null or a string"
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"string is not valid UTF-8 ({exc.reason}); remove the lone surrogate"
    else:
        return f"a {type(value).__name__} is not a JSON value; write it as a string"
    return None


def json_value_findings(value: Any, path: PathParts, *, max_bytes: int = MAX_INPUTS_BYTES) -> list[Finding]:
    """Where ``value`` holds something the journal cannot (each with its path), else whether it is larger than
    ``max_bytes`` as compact JSON. Iterative, and bounded in depth itself (MAX_DEPTH, as manifests are): a value
    may come from a model (a plan) rather than from a parsed manifest."""
    findings: list[Finding] = []
    stack: list[tuple[Any, PathParts, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple) and depth >= MAX_DEPTH:
            findings.append((where, f"nested deeper than {MAX_DEPTH} levels; flatten it"))
            continue
        if isinstance(item, Mapping):
            for key, child in item.items():
                problem = _problem(key)
                if problem is not None:
                    findings.append((where, f"key: {problem}"))
                stack.append((child, [*where, str(key)], depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, [*where, i], depth + 1) for i, child in enumerate(item))
        else:
            problem = _problem(item)
            if problem is not None:
                findings.append((where, problem))
    if findings:
        return sorted(findings, key=lambda f: [str(p) for p in f[0]])
    size = len(canonical_json(value))
    if size > max_bytes:
        return [(path, f"{size:,} bytes as JSON, more than the {max_bytes:,} allowed; pass large data by reference "
                       "(a URL, a tool that fetches it)")]
    return []
