"""memory.kind conversation and its maxTokens: what validation accepts, refuses (naming the field) and plans."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent, Catalog
from agentflow.validation import validate_body
from agentflow.validation.grants import agent_loop, runs_loop


def agent(memory: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "helper"},
            "spec": {"role": "helper", "model": {"name": "agentflow/offline"}, "memory": memory, **spec}}


@pytest.mark.parametrize(("memory", "field", "needle"), [
    ({"maxTokens": 500}, "spec.memory.maxTokens", "maxTokens is the budget of kind: conversation, but kind is none"),
    ({"kind": "conversation", "maxTokens": 100}, "spec.memory.maxTokens", "greater than or equal to 256"),
    ({"kind": "conversation", "maxTokens": 1_000_001}, "spec.memory.maxTokens", "less than or equal to 1000000"),
    ({"kind": "summary"}, "spec.memory.kind", "'none' or 'conversation'"),
])
def test_refusals_name_the_field(memory: dict[str, Any], field: str, needle: str) -> None:
    problems = validate_body(agent(memory))
    assert [p.path for p in problems] == [field], problems
    assert needle in problems[0].message


def test_a_conversation_runs_a_loop_with_its_budget_even_without_tools() -> None:
    assert validate_body(agent({"kind": "conversation"})) == []
    default = Agent.model_validate(agent({"kind": "conversation"}))
    assert runs_loop(default) and agent_loop(default, Catalog()).conversation_tokens == 4000
    sized = Agent.model_validate(agent({"kind": "conversation", "maxTokens": 1200}))
    assert agent_loop(sized, Catalog()).conversation_tokens == 1200
    plain = Agent.model_validate(agent({}))
    assert not runs_loop(plain) and agent_loop(plain, Catalog()).conversation_tokens is None
