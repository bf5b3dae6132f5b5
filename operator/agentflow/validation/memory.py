"""The memory functions an Agent's loop offers its model, as OpenAI function schemas (agentflow.memory runs them).

What ``spec.memory`` enables: ``longTerm`` gives ``memory_search`` and ``memory_save``, ``episodic`` gives
``past_runs``. Pure: the engine's plan (agentflow.validation.grants.agent_loop) and the memory tools
(agentflow.memory.tools) share these names and schemas. Names hold an underscore, which ToolPolicy tool names
cannot: they never collide with a granted tool.
"""

from __future__ import annotations

from typing import Any

from agentflow.models import MemorySpec

__all__ = ["MEMORY_FUNCTIONS", "MEMORY_SAVE", "MEMORY_SEARCH", "PAST_RUNS", "memory_function_schemas"]

MEMORY_SEARCH = "memory_search"
MEMORY_SAVE = "memory_save"
PAST_RUNS = "past_runs"
MEMORY_FUNCTIONS = (MEMORY_SEARCH, MEMORY_SAVE, PAST_RUNS)


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


def memory_function_schemas(spec: MemorySpec) -> list[dict[str, Any]]:
    """The memory functions ``spec`` enables, as OpenAI function schemas."""
    out = []
    if spec.long_term is not None:
        k = spec.long_term.search_k
        out.append(_function(
            MEMORY_SEARCH, "Search the facts you saved in earlier runs; the closest first.",
            {"query": {"type": "string", "minLength": 1, "description": "what to look for"},
             "k": {"type": "integer", "minimum": 1, "maximum": k, "description": f"most facts to return (<= {k})"}},
            ["query"]))
        out.append(_function(
            MEMORY_SAVE, "Save one fact worth remembering in later runs (short, self-contained, no secrets).",
            {"text": {"type": "string", "minLength": 1, "maxLength": 2000},
             "subject": {"type": "string", "description": "who or what the fact is about"},
             "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10}},
            ["text"]))
    if spec.episodic:
        out.append(_function(
            PAST_RUNS, "Your previous runs, newest first: workflow, outcome and what your steps returned.",
            {"workflow": {"type": "string", "description": "only runs of this Workflow"},
             "limit": {"type": "integer", "minimum": 1, "maximum": 20}},
            []))
    return out
