"""Embeddings from the AgentFlow gateway over HTTP: what step pods (and step subprocesses) embed memories with.

``GatewayEmbedder(client, model)`` is an :class:`agentflow.memory.embeddings.Embedder` over a client with
``embed(model, texts)``, :class:`agentflow.llm.gateway_client.GatewayClient` (the attempt's token as its key), so
the gateway's ``/v1/embeddings`` charges the attempt's Budgets, caches and audits the call (agentflow.gateway.
embeddings). In the local runner's own process the same path is agentflow.gateway.embeddings.InProcessEmbedder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from agentflow.llm.chat import ModelError

from .records import EmbeddingError

__all__ = ["EmbeddingClient", "GatewayEmbedder"]


class EmbeddingClient(Protocol):
    async def embed(self, model: str, texts: list[str]) -> list[list[float]]: ...


@dataclasses.dataclass
class GatewayEmbedder:
    client: EmbeddingClient
    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            return await self.client.embed(self.model, list(texts))
        except ModelError as exc:
            raise EmbeddingError(f"embedding with {self.model} through the gateway: {exc.type}: {exc.message}",
                                 retryable=exc.retryable) from exc
