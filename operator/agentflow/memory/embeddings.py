"""Embeddings for long-term memory: the :class:`Embedder` seam, and the offline :class:`HashingEmbedder`.

    Embedder.model                    what rows are tagged with (a store searches only rows of its embedder's model)
    await Embedder.embed(texts)       one unit-length vector per text, or EmbeddingError

Where embeddings come from:

``HashingEmbedder`` (``agentflow/hashing-v1``)  deterministic, free, no key, no network: every lower-cased word
    and every 3-character piece of a word (with its boundaries) is hashed (BLAKE2b, so the same in every process
    and version of Python) into one of 256 dimensions with a sign, words weighing twice as much as pieces, and the
    vector is scaled to unit length. Texts that share words and word pieces come out close ("refund" finds
    "refunds" and "refunded"); synonyms and paraphrases do not. It is NOT a language-model embedding: it is what
    local runs without a key use, and what tests use, clearly named so it is never mistaken for one.
``GatewayEmbedder`` (agentflow.memory.gateway)  a real embedding model through the AgentFlow gateway's
    ``/v1/embeddings``: budgeted, cached and charged to the step like a chat call.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Protocol

from agentflow.models import HASHING_EMBEDDING

from .records import EmbeddingError

__all__ = ["HASHING_DIMENSIONS", "Embedder", "HashingEmbedder", "cosine", "vector_text"]

HASHING_DIMENSIONS = 256
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    """Turns texts into vectors. ``model`` names the embedding; vectors of different models never mix."""

    @property
    def model(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def _features(text: str) -> list[tuple[str, float]]:
    features: list[tuple[str, float]] = []
    for word in _WORD.findall(text.lower()):
        features.append(("w:" + word, 1.0))
        padded = f"<{word}>"
        features.extend(("c:" + padded[i:i + 3], 0.5) for i in range(len(padded) - 2))
    return features


def hashing_vector(text: str, dimensions: int = HASHING_DIMENSIONS) -> list[float]:
    """The offline embedding of one text (see the module docstring); all zeros for a text with no word."""
    vector = [0.0] * dimensions
    for feature, weight in _features(text):
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        vector[value % dimensions] += weight if (value >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


class HashingEmbedder:
    """The offline embedding ``agentflow/hashing-v1``: deterministic word and word-piece hashing (no model)."""

    model = HASHING_EMBEDDING
    dimensions = HASHING_DIMENSIONS

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise EmbeddingError("embed takes a list of texts, not one string", retryable=False)
        return [hashing_vector(t, self.dimensions) for t in texts]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros or their lengths differ)."""
    if len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def vector_text(vector: Sequence[float]) -> str:
    """pgvector's text form of a vector: ``[0.1,0.2,...]``."""
    if not vector or not all(math.isfinite(v) for v in vector):
        raise EmbeddingError("an embedding must be a non-empty list of finite numbers", retryable=False)
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"
