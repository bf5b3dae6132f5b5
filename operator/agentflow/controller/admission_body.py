"""Admission requests too deep to decode: refused with a message, not a 500.

kopf decodes each AdmissionReview with ``json.loads``, which raises RecursionError past about a thousand
levels of nesting; the API server accepts up to ten thousand (a Workflow's ``inputs`` are free-form), so a
hostile or careless object would get an opaque "failed calling webhook" (and, had it been admitted, stop the
operator's watch from decoding it). :func:`too_deep` measures the nesting of the request text without
decoding it; :func:`refusal` is the AdmissionReview that denies it with the limit in the message, the
limit being the one `agentflow validate` applies (agentflow.models.limits.MAX_DEPTH).
"""

from __future__ import annotations

import re
from typing import Any, Final

from ..models.limits import MAX_DEPTH

__all__ = ["ENVELOPE_DEPTH", "refusal", "too_deep"]

ENVELOPE_DEPTH: Final = 3
"""Levels the AdmissionReview adds above the object (review, request, object)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_UID = re.compile(r'"uid"\s*:\s*"([^"\\]{1,128})"')


def too_deep(text: str, limit: int = MAX_DEPTH + ENVELOPE_DEPTH) -> bool:
    """Whether the JSON ``text`` nests objects and arrays deeper than ``limit`` (strings are skipped)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def refusal(text: str) -> dict[str, Any] | None:
    """The AdmissionReview denying a request nested too deep, or None when there is no request uid to answer
    (the caller then answers 400). The uid is the first one in the text: the request's own, which the API
    server writes before the object."""
    found = _UID.search(text)
    if found is None:
        return None
    message = (f"the object is nested deeper than {MAX_DEPTH} levels (agentflow validate refuses the same); "
               "flatten it")
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": found.group(1), "allowed": False, "status": {"code": 422, "message": message}}}
