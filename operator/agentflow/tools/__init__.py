"""Tools that tool steps call: the builtin tools and the ToolRunner for every kind.

Errors::

    ToolError            a call failed; .type, .retryable, .tool  (agentflow.tools.errors)
    BuiltinToolError     a builtin's config or inputs are wrong; becomes a ToolError

Nothing is built at import time: a driver builds one ToolRunner at startup. The MCP SDK is imported only when
an MCP tool is first used (agentflow.tools.mcp; it takes about half a second to import).
"""

from __future__ import annotations

from .builtin import Builtins, BuiltinToolError, TextSearchIndex, extract, parse_path
from .errors import ToolError
from .functions import Functions, discover_functions, function_name, function_schemas, resolve_function
from .runner import IDEMPOTENCY_ENV, TokenBucket, ToolOutcome, ToolRunner

__all__ = [
    "IDEMPOTENCY_ENV",
    "BuiltinToolError",
    "Builtins",
    "Functions",
    "TextSearchIndex",
    "TokenBucket",
    "ToolError",
    "ToolOutcome",
    "ToolRunner",
    "discover_functions",
    "extract",
    "function_name",
    "function_schemas",
    "parse_path",
    "resolve_function",
]
