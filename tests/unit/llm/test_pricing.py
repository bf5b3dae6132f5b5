"""Prices per token from a cost table (litellm's bundled one by default)."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from agentflow.llm import estimate_cost, litellm_provider, price_per_token

TABLE = {
    "gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6},
    "embed-only": {"input_cost_per_token": 1e-7},
}


def test_lookup_with_and_without_provider_prefix() -> None:
    assert price_per_token("gpt-x", TABLE) == (1e-6, 4e-6)
    assert price_per_token("openai/gpt-x", TABLE) == (1e-6, 4e-6)


def test_unknown_or_incomplete_entries_have_no_price() -> None:
    assert price_per_token("nope", TABLE) is None
    assert price_per_token("embed-only", TABLE) is None
    assert estimate_cost("nope", 10, 10, TABLE) is None


def test_estimate_cost() -> None:
    assert estimate_cost("gpt-x", 1000, 100, TABLE) == pytest.approx(1000 * 1e-6 + 100 * 4e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="model"):
        price_per_token("", TABLE)
    with pytest.raises(ValueError, match="input_tokens=-1"):
        estimate_cost("gpt-x", -1, 0, TABLE)


def test_bundled_table_is_used_offline(litellm_module: ModuleType) -> None:
    assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True"
    prices = litellm_provider().prices("openai/gpt-4o-mini")
    assert prices is not None and all(p > 0 for p in prices)
    assert litellm_module.suppress_debug_info is True
