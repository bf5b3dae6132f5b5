"""Prices and token counts of model calls. Pure: the price table is passed in.

The table is litellm's bundled ``model_cost`` (:func:`agentflow.llm.litellm_upstream.cost_table`), shaped
``{model: {"input_cost_per_token": float, "output_cost_per_token": float, ...}}``; a model is looked up as
given and without its provider prefix. :func:`approximate_token_counter` (agentflow.engine.tokens, where the
engine counts conversations with it) is the count used when no tokenizer is loaded (the offline model, the
local runner without a provider): characters / 4 plus 4 per message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentflow.engine.tokens import approximate_token_counter

__all__ = ["PriceLookup", "TokenCounter", "approximate_token_counter", "estimate_cost", "price_per_token"]

TokenCounter = Callable[[str, Sequence[Mapping[str, Any]]], int]
"""(model, chat messages) -> prompt tokens."""
PriceLookup = Callable[[str], "tuple[float, float] | None"]
"""model -> (input USD per token, output USD per token), None when unknown."""


def _candidates(model: str) -> list[str]:
    """Names a model may be listed under: as given, and without the provider prefix."""
    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])
    return names


def price_per_token(model: str, cost_table: Mapping[str, Mapping[str, Any]]) -> tuple[float, float] | None:
    """(input USD per token, output USD per token) of ``model`` in ``cost_table``, or None when unknown."""
    if not model:
        raise ValueError("price_per_token: model must be a non-empty model name, e.g. 'openai/gpt-4o-mini'")
    for name in _candidates(model):
        entry = cost_table.get(name)
        if not entry:
            continue
        inp = entry.get("input_cost_per_token")
        out = entry.get("output_cost_per_token")
        if isinstance(inp, int | float) and isinstance(out, int | float):
            return float(inp), float(out)
    return None


def estimate_cost(
    model: str, input_tokens: int, output_tokens: int, cost_table: Mapping[str, Mapping[str, Any]]
) -> float | None:
    """USD cost of a call with these token counts, or None when the model's price is unknown."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(
            f"estimate_cost: token counts must be >= 0 (got input_tokens={input_tokens}, output_tokens={output_tokens})"
        )
    prices = price_per_token(model, cost_table)
    if prices is None:
        return None
    return input_tokens * prices[0] + output_tokens * prices[1]


def no_prices(model: str) -> tuple[float, float] | None:
    """The PriceLookup of the offline model: nothing is priced."""
    return None
