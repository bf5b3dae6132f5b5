"""Long-term and episodic memory of Agents: facts saved and searched across runs, and past runs read back.

::

    records.py     PURE: Scope, MemoryHit / MemoryEntry (plain JSON dicts), the budget and erasure rules, errors
    embeddings.py  the Embedder seam; HashingEmbedder, the offline embedding agentflow/hashing-v1 (not a model)
    gateway.py     GatewayEmbedder: a real embedding model through the AgentFlow gateway (budgeted, cached)
    store.py       the MemoryStore contract: save / search / forget / entries; erasure recorded in the audit chain
    local.py       SqliteMemoryStore: the local runner's (the state dir's memory.sqlite3, brute-force cosine)
    postgres.py    PostgresMemoryStore: PostgreSQL with pgvector (the one module here that imports asyncpg)
    episodic.py    Episode, the EpisodeSource seam: StoredEpisodes over the operator's journal (a cluster's gateway),
                   the local runner's in agentflow.runner.episodes
    tools.py       AgentMemory: memory_search / memory_save / past_runs as function schemas and calls

Errors (agentflow.memory.records)::

    MemoryStoreError          .type, .retryable
      InvalidMemory           bad text, metadata, query, k, budget or id; a function the Agent does not enable
      MemoryUnavailable       the store, or the audit chain of an erasure, cannot be reached (retryable)
      EmbeddingError          embedding failed
      MemoryNotFound          forget by id of a memory that is not there

Nothing connects at import: drivers build a store (and its embedder) at startup and pass it in.
"""

from .embeddings import Embedder, HashingEmbedder
from .episodic import Episode, EpisodeSource, EpisodeStep, NoEpisodes, StoredEpisodes
from .records import (
    EmbeddingError,
    InvalidMemory,
    MemoryEntry,
    MemoryHit,
    MemoryNotFound,
    MemoryStoreError,
    MemoryUnavailable,
    Scope,
)
from .store import MemoryStore
from .tools import MEMORY_FUNCTIONS, AgentMemory, memory_function_schemas

__all__ = [
    "MEMORY_FUNCTIONS",
    "AgentMemory",
    "Embedder",
    "EmbeddingError",
    "Episode",
    "EpisodeSource",
    "EpisodeStep",
    "HashingEmbedder",
    "InvalidMemory",
    "MemoryEntry",
    "MemoryHit",
    "MemoryNotFound",
    "MemoryStore",
    "MemoryStoreError",
    "MemoryUnavailable",
    "NoEpisodes",
    "Scope",
    "StoredEpisodes",
    "memory_function_schemas",
]
