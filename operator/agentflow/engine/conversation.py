"""An Agent's conversation within a run (memory.kind conversation): what its model turns carry, and when to compact.

Pure: derived from the journal by :class:`agentflow.engine.run.Run`, so resume and replay carry the same messages.

    Agent conversation   per Agent of the run: a summary (or none) and the exchanges of its finished steps, in the
                         order they finished; an exchange is two messages, the step's inputs (``user``) and its
                         answer (``assistant``). Tool traffic of a finished step is not carried.
    a loop's view        a step's loop takes the Agent's conversation as it is when the loop starts (``history``),
                         adds its own turns (an assistant message with its tool calls and their results: one unit)
    the budget           before each model turn, summary + history + the step's inputs + the loop's turns are
                         counted (:func:`agentflow.engine.tokens.approximate_token_counter`); past ``maxTokens``
                         the oldest units (history first, then turns; never the latest turn) are compacted until
                         what is left fits in half the budget: the engine schedules a summary node ``STEP/sN`` (an
                         llm attempt of the Agent, through the gateway) with those messages and the previous
                         summary, and the turn waits for it. The summary replaces them; the turn then starts.
    the end of a loop    a loop that succeeded adds its exchange to the Agent's conversation; if it compacted, its
                         summary and what was left of its history replace the Agent's (exchanges that steps running
                         beside it added meanwhile are kept).

Steps of one Agent running side by side each see the conversation as it was when they started.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .tokens import approximate_token_counter

__all__ = [
    "SUMMARY_HEADER", "AgentConversation", "Unit", "compaction", "count", "exchange", "history_messages",
    "prompt_message", "turn_units",
]

Unit = tuple[Mapping[str, Any], ...]
"""Messages that stay together: an exchange (user, assistant) or a loop's turn (assistant, then its tool results)."""

SUMMARY_HEADER = "Summary of your earlier conversation in this run:"
"""How the summary is put before the carried messages: a user message, not a system one (it is a model's text
about tool outputs and inputs, and gets no more authority than they had)."""


class AgentConversation:
    """The conversation of one Agent in a run: its summary and its exchanges (each with its sequence number)."""

    __slots__ = ("next_seq", "summary", "units")

    def __init__(self) -> None:
        self.summary: str | None = None
        self.units: list[tuple[int, Unit]] = []
        self.next_seq = 0

    def add(self, unit: Unit) -> None:
        self.units.append((self.next_seq, unit))
        self.next_seq += 1


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def prompt_message(step: str, inputs: Any) -> dict[str, Any]:
    """What a step was asked, as the Agent's conversation carries it."""
    return {"role": "user", "content": f"(step {step}) inputs: {_text(inputs if inputs is not None else {})}"}


def exchange(step: str, inputs: Any, output: Any) -> Unit:
    """A finished step's exchange: its inputs and its answer."""
    return prompt_message(step, inputs), {"role": "assistant", "content": _text(output)}


def summary_message(summary: str) -> dict[str, Any]:
    return {"role": "user", "content": f"{SUMMARY_HEADER}\n{summary}"}


def history_messages(summary: str | None, history: Sequence[Unit]) -> list[dict[str, Any]]:
    """What a turn is sent before the step's own prompt: the summary, then the earlier exchanges."""
    out = [summary_message(summary)] if summary is not None else []
    out.extend(dict(m) for unit in history for m in unit)
    return out


def turn_units(messages: Sequence[Mapping[str, Any]]) -> list[Unit]:
    """A loop's messages as units: each starts at an assistant message (its tool results follow it)."""
    units: list[list[Mapping[str, Any]]] = []
    for message in messages:
        if message.get("role") == "assistant" or not units:
            units.append([])
        units[-1].append(message)
    return [tuple(u) for u in units]


def count(messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of ``messages`` as the gateway estimates them without a tokenizer."""
    return approximate_token_counter("", messages)


def compaction(max_tokens: int, summary: str | None, history: Sequence[Unit], prompt: Mapping[str, Any],
               turns: Sequence[Unit]) -> int:
    """How many of the oldest units (``history`` then ``turns``, never the last turn) to compact before the next
    turn: 0 when everything fits in ``max_tokens`` or nothing can go; else the fewest that leave at most half."""
    sizes = [count(u) for u in history] + [count(u) for u in turns]
    total = sum(sizes) + count([prompt]) + (count([summary_message(summary)]) if summary is not None else 0)
    movable = len(history) + max(len(turns) - 1, 0)
    if total <= max_tokens or movable == 0:
        return 0
    k = 0
    while k < movable and total > max_tokens // 2:
        total -= sizes[k]
        k += 1
    return k
