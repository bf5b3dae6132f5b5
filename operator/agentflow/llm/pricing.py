"""Model prices per token, from the price table bundled with litellm (no network).

litellm ships ``model_prices_and_context_window.json`` inside its package, but
by default it downloads a fresh copy from GitHub when it is imported. AgentFlow
always imports litellm through :func:`load_litellm`, which sets
``LITELLM_LOCAL_MODEL_COST_MAP=True`` first, so prices come from the installed
package and importing litellm never touches the network.

Importing litellm takes seconds; nothing here imports it at module import time.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

LOCAL_COST_MAP_ENV = "LITELLM_LOCAL_MODEL_COST_MAP"


def load_litellm() -> ModuleType:
    """Import litellm with its bundled price map.

    Sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` in the process environment
    unless the caller already set it (litellm reads it only at import time),
    and turns off litellm's help banner on stdout.
    """
    os.environ.setdefault(LOCAL_COST_MAP_ENV, "True")
    module = importlib.import_module("litellm")
    # litellm prints a "Give Feedback / Get Help" banner to stdout on every exception;
    # the CLI's live display and --json output must stay clean.
    settings: Any = module
    settings.suppress_debug_info = True
    return module


def _candidates(model: str) -> list[str]:
    """Names a model may be listed under: as given, and without the provider prefix."""
    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])
    return names


def price_per_token(
    model: str, cost_table: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[float, float] | None:
    """(input USD per token, output USD per token) of ``model``, or None when unknown.

    ``model`` is in litellm's naming (``openai/gpt-4o-mini`` or ``gpt-4o-mini``).
    ``cost_table`` defaults to litellm's bundled ``model_cost`` table.
    """
    if not model:
        raise ValueError("price_per_token: model must be a non-empty model name, e.g. 'openai/gpt-4o-mini'")
    table: Mapping[str, Mapping[str, Any]] = cost_table if cost_table is not None else load_litellm().model_cost
    for name in _candidates(model):
        entry = table.get(name)
        if not entry:
            continue
        inp = entry.get("input_cost_per_token")
        out = entry.get("output_cost_per_token")
        if isinstance(inp, int | float) and isinstance(out, int | float):
            return float(inp), float(out)
    return None


def estimate_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_table: Mapping[str, Mapping[str, Any]] | None = None,
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


def count_message_tokens(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    """Prompt tokens of chat ``messages`` for ``model`` with litellm's tokenizers (bundled: no network).

    Models litellm has no tokenizer for are counted with tiktoken's cl100k_base, so the count of an
    unknown or local model is an approximation.
    """
    counted = load_litellm().token_counter(model=model, messages=[dict(m) for m in messages])
    return int(counted)
