"""The one error of a tool call, whatever its kind (agentflow.tools.runner, agentflow.tools.mcp)."""

from __future__ import annotations

__all__ = ["ToolError"]


class ToolError(Exception):
    """A tool call failed. ``retryable`` False means retrying the same call cannot help."""

    def __init__(self, type: str, message: str, *, retryable: bool, tool: str = "",
                 http_status: int | None = None) -> None:
        """``http_status``: the status an http tool answered with, when it answered with an error."""
        super().__init__(message)
        self.http_status = http_status
        self.type = type
        self.message = message
        self.retryable = retryable
        self.tool = tool

    def __repr__(self) -> str:
        return f"ToolError(type={self.type!r}, retryable={self.retryable}, tool={self.tool!r})"
