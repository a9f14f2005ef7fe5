"""Embeddings for memory: texts to vectors through litellm (`aembedding`), from the
configured provider.

The recorder embeds each lesson it keeps and each search's text; search then ranks by
meaning as well as by words (store/memory.py). Embeddings are a help, never a dependency:
a provider that fails or is slow leaves the lesson to full-text search, and says so in
the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from agents.errors import AgentError
from agents.llm.client import import_litellm, without_key
from agents.settings import Settings


class EmbeddingError(AgentError):
    """The provider gave no vectors; the message never contains the key."""


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str
    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddingConfig | None:
        """None without `OMOI_EMBEDDING_MODEL`; the chat model's address and key unless
        the embedding model has its own."""
        if not settings.embedding_model:
            return None
        return cls(
            model=settings.embedding_model,
            api_key=settings.embedding_api_key or settings.llm_api_key,
            base_url=settings.embedding_base_url or settings.llm_base_url,
            timeout_s=settings.embedding_timeout_s,
        )


class Embedder:
    def __init__(self, config: EmbeddingConfig) -> None:
        self.config = config

    async def embed(
        self, texts: Sequence[str], timeout_s: float | None = None
    ) -> list[list[float]]:
        """One vector per text, in order; EmbeddingError when there are none."""
        cfg = self.config
        limit = timeout_s or cfg.timeout_s
        try:
            litellm = await asyncio.to_thread(import_litellm)
            kwargs: dict[str, Any] = {"model": cfg.model, "input": list(texts), "timeout": limit}
            if cfg.base_url:
                kwargs["api_base"] = cfg.base_url
            if cfg.api_key:
                kwargs["api_key"] = cfg.api_key.get_secret_value()
            answer = await asyncio.wait_for(litellm.aembedding(**kwargs), limit)
            vectors = [_vector(item) for item in sorted(answer.data, key=_index)]
        except Exception as exc:  # noqa: BLE001 - any failure is "no vectors", said why
            said = without_key(f"no embeddings from {cfg.model}: {exc!r}", cfg.api_key)
            raise EmbeddingError(said[:1000]) from None
        if len(vectors) != len(texts) or not all(vectors):
            raise EmbeddingError(f"{cfg.model} gave {len(vectors)} vectors for {len(texts)} texts")
        return vectors


def _index(item: Any) -> int:
    return int(item["index"] if isinstance(item, dict) else item.index)


def _vector(item: Any) -> list[float]:
    values = item["embedding"] if isinstance(item, dict) else item.embedding
    return [float(v) for v in values]
