"""Memory tools through the gateway: an agent loop's ``memory_search``, ``memory_save`` and ``past_runs`` calls.

The gateway is where an attempt's identity is known (its Attribution: namespace, run, the Agent whose loop
calls), so it is where memory is scoped: a step cannot name another namespace's or another Agent's memory,
whatever arguments its model writes. Embeddings are the gateway's own (``Embeddings``: the Agent's
``spec.memory.longTerm.embeddingModel``, budgeted and charged to the attempt)::

    memory = GatewayMemory(embeddings, store=lambda embedder: SqliteMemoryStore(path, embedder),
                           episodes=LocalEpisodes(RunStore(state_dir)))
    answer = await memory.call(who, "memory_search", {"query": "refund policy"})   # plain JSON

``store``: builds the MemoryStore over an embedder charged to the caller (None: no store is configured, and
``memory_search``/``memory_save`` answer MemoryUnavailable). ``episodes``: past runs (None: not available).
Errors are agentflow.memory's (MemoryStoreError: ``.type``, ``.retryable``); the HTTP server answers them as
JSON errors and agentflow.llm.gateway_client raises them again on the step's side as ModelError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..memory import AgentMemory, Embedder, EpisodeSource, InvalidMemory, MemoryStore, Scope
from ..telemetry import Tracing, genai
from .embeddings import Embeddings, InProcessEmbedder
from .service import Attribution

__all__ = ["GatewayMemory", "StoreFactory"]

StoreFactory = Callable[[Embedder], MemoryStore]


class GatewayMemory:
    """The memory functions of the Agents a gateway serves (see the module docstring)."""

    def __init__(self, embeddings: Embeddings, store: StoreFactory | None = None,
                 episodes: EpisodeSource | None = None, tracing: Tracing | None = None) -> None:
        self.embeddings = embeddings
        self.store = store
        self.episodes = episodes
        self.tracing = tracing or Tracing.off()

    def of(self, who: Attribution) -> AgentMemory:
        """The memory of the Agent ``who`` calls for, in ``who``'s namespace."""
        agent = who.agent
        if agent is None:
            raise InvalidMemory(f"step {who.step!r} of {who.subject} has no Agent, so it has no memory")
        long_term = agent.spec.memory.long_term
        store = self.store(InProcessEmbedder(self.embeddings, who)) \
            if self.store is not None and long_term is not None else None
        return AgentMemory(Scope(who.namespace, agent.metadata.name), agent.spec.memory, store, self.episodes,
                           who.run_uid)

    async def call(self, who: Attribution, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One memory operation, traced as ``memory NAME`` (a search is a ``retrieval``)."""
        attrs: dict[str, Any] = {genai.MEMORY_FUNCTION: name, genai.AGENT_NAME: who.agent_name or None,
                                 genai.NODE: who.node, genai.ATTEMPT: who.attempt}
        if name in ("memory_search", "past_runs"):
            attrs[genai.OPERATION_NAME] = genai.RETRIEVAL
        with self.tracing.span(f"memory {name}", attrs) as span:
            answer = await self.of(who).call(name, arguments)
            found = answer.get("memories", answer.get("runs")) if isinstance(answer, Mapping) else None
            if isinstance(found, list):
                span.set_attribute(genai.MEMORY_RESULTS, len(found))
            return answer
