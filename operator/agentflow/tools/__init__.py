"""Tools that tool steps call: the builtin tools and the ToolRunner for every kind.

Errors::

    ToolError            a call failed; .type, .retryable, .tool  (agentflow.tools.runner)
    BuiltinToolError     a builtin's config or inputs are wrong; becomes a ToolError

Nothing is built at import time: a driver builds one ToolRunner at startup.
"""

from __future__ import annotations

from .builtin import Builtins, BuiltinToolError, TextSearchIndex, extract, parse_path
from .runner import IDEMPOTENCY_ENV, TokenBucket, ToolError, ToolOutcome, ToolRunner

__all__ = [
    "IDEMPOTENCY_ENV",
    "BuiltinToolError",
    "Builtins",
    "TextSearchIndex",
    "TokenBucket",
    "ToolError",
    "ToolOutcome",
    "ToolRunner",
    "extract",
    "parse_path",
]
