"""Small Agent/PromptVersion builders for the llm tests."""

from __future__ import annotations

from typing import Any

from agentflow.models import Agent, PromptVersion


def agent(instructions: str = "Be precise.", role: str = "support triage specialist") -> Agent:
    return Agent.model_validate(
        {
            "metadata": {"name": "triage"},
            "spec": {"role": role, "instructions": instructions, "model": {"name": "openai/gpt-4o-mini"}},
        }
    )


def prompt(messages: list[dict[str, str]], output_schema: dict[str, Any] | None = None, **spec: Any) -> PromptVersion:
    body: dict[str, Any] = {"prompt": "classify", "version": "1", "messages": messages, **spec}
    if output_schema is not None:
        body["outputSchema"] = output_schema
    return PromptVersion.model_validate({"metadata": {"name": "classify-v1"}, "spec": body})


CLASSIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["category", "urgency", "confidence"],
    "additionalProperties": False,
    "properties": {
        "category": {"enum": ["billing", "technical", "shipping", "account", "other"]},
        "urgency": {"enum": ["low", "medium", "high"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
