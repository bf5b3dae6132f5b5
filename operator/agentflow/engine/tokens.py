"""The token estimate without a tokenizer: characters / 4 plus 4 per message. Pure.

The gateway counts prompts with it when no tokenizer is loaded (the offline model, the local runner without a
provider; agentflow.llm.pricing re-exports it), the cost preflight with the same provider counter, and the engine
with it alone (a tokenizer is a library the pure engine cannot load, and its counts must be the same on every
replay): an Agent's ``memory.maxTokens`` is held in this count (agentflow.engine.conversation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["approximate_token_counter", "message_text"]


def message_text(message: Mapping[str, Any]) -> str:
    """What of a chat message is counted: its text content and its tool calls' names and arguments."""
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {} if isinstance(call, Mapping) else {}
        text += str(function.get("name", "")) + str(function.get("arguments", ""))
    return text


def approximate_token_counter(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Characters / 4 plus 4 per message: the offline model's own count (no tokenizer to load)."""
    return sum(4 + math.ceil(len(message_text(m)) / 4) for m in messages)
