"""Memory as tools an agent loop offers its model: ``memory_search``, ``memory_save`` and ``past_runs``.

::

    memory = AgentMemory.of(agent, store=store, episodes=episodes, run_id=request.run_id)
    schemas = memory.function_schemas()        # OpenAI function schemas of what the Agent's spec.memory enables
    result = await memory.call(name, arguments)   # plain JSON; MemoryStoreError (.type, .retryable) otherwise

What each answers (the loop journals it, so a replay returns it without asking again)::

    memory_search {query, k?}                 -> {"memories": [MemoryHit...]}   (k <= spec.memory.longTerm.searchK,
                                                                                 within its tokenBudget)
    memory_save   {text, subject?, tags?}     -> {"id": ID}                     (TTL: longTerm.ttlSeconds; metadata:
                                                                                 subject, tags, run)
    past_runs     {workflow?, limit?}         -> {"runs": [Episode...]}        (spec.memory.episodic; this run left out)

Names hold an underscore, which ToolPolicy tool names cannot: they never collide with a granted tool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agentflow.models import Agent, MemorySpec
from agentflow.validation.memory import MEMORY_FUNCTIONS, MEMORY_SAVE, MEMORY_SEARCH, PAST_RUNS, memory_function_schemas

from .episodic import EpisodeSource
from .records import InvalidMemory, MemoryUnavailable, Scope
from .store import MemoryStore

__all__ = ["MEMORY_FUNCTIONS", "AgentMemory", "memory_function_schemas"]

_ARGUMENTS = {MEMORY_SEARCH: {"query", "k"}, MEMORY_SAVE: {"text", "subject", "tags"}, PAST_RUNS: {"workflow", "limit"}}


def _string(arguments: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = arguments.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidMemory(f"argument {name!r} must be a non-empty string")
    return value


def _int(arguments: Mapping[str, Any], name: str, default: int, high: int) -> int:
    value = arguments.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidMemory(f"argument {name!r} must be an integer from 1 to {high} (got {value!r})")
    return value


@dataclasses.dataclass
class AgentMemory:
    """One Agent's memory tools within one attempt."""

    scope: Scope
    spec: MemorySpec
    store: MemoryStore | None = None
    episodes: EpisodeSource | None = None
    run_id: str | None = None

    @classmethod
    def of(cls, agent: Agent, *, store: MemoryStore | None = None, episodes: EpisodeSource | None = None,
           run_id: str | None = None) -> AgentMemory:
        scope = Scope(agent.metadata.namespace or "default", agent.metadata.name)
        return cls(scope, agent.spec.memory, store, episodes, run_id)

    def function_schemas(self) -> list[dict[str, Any]]:
        return memory_function_schemas(self.spec)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run memory function ``name``; its answer as plain JSON."""
        if not isinstance(arguments, Mapping):
            raise InvalidMemory(f"{name}: arguments must be a JSON object")
        known = _ARGUMENTS.get(name)
        unknown = sorted(set(arguments) - known) if known is not None else []
        if unknown:  # never obeyed: the scope is the caller's (its namespace and Agent), not the model's to choose
            raise InvalidMemory(f"{name}: unknown argument(s) {', '.join(map(repr, unknown))} (it takes: "
                                f"{', '.join(sorted(known or ()))})")
        long_term = self.spec.long_term
        if name in (MEMORY_SEARCH, MEMORY_SAVE):
            if long_term is None:
                raise InvalidMemory(f"{name}: Agent {self.scope.agent!r} has no spec.memory.longTerm")
            if self.store is None:
                raise MemoryUnavailable(f"{name}: no memory store is configured for this run", retryable=False)
            if name == MEMORY_SEARCH:
                query = _string(arguments, "query", required=True)
                assert query is not None
                k = _int(arguments, "k", long_term.search_k, long_term.search_k)
                return {"memories": list(await self.store.search(self.scope, query, k, long_term.token_budget))}
            text = _string(arguments, "text", required=True)
            assert text is not None
            metadata: dict[str, Any] = {}
            subject = _string(arguments, "subject")
            if subject is not None:
                metadata["subject"] = subject
            tags = arguments.get("tags")
            if tags is not None:
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or len(tags) > 10:
                    raise InvalidMemory("argument 'tags' must be a list of at most 10 strings")
                metadata["tags"] = tags
            if self.run_id is not None:
                metadata["run"] = self.run_id
            return {"id": await self.store.save(self.scope, text, metadata, ttl_seconds=long_term.ttl_seconds)}
        if name == PAST_RUNS:
            if not self.spec.episodic:
                raise InvalidMemory(f"{name}: Agent {self.scope.agent!r} does not set spec.memory.episodic")
            if self.episodes is None:
                raise MemoryUnavailable(f"{name}: past runs are not available here", retryable=False)
            runs = await self.episodes.past_runs(self.scope, limit=_int(arguments, "limit", 5, 20),
                                                 workflow=_string(arguments, "workflow"), exclude_run=self.run_id)
            return {"runs": list(runs)}
        raise InvalidMemory(f"no memory function is called {name!r} (there are: {', '.join(MEMORY_FUNCTIONS)})")
