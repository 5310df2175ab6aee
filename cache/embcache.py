"""Embedding cache in Redis: the same text is never embedded twice by the same model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import redis

from cache.keyspace import Keyspace
from cache.redisconn import get_many
from cache.semantic import pack, unpack


class EmbeddingCache:
    def __init__(self, client: redis.Redis, keys: Keyspace, ttl_s: int = 24 * 3600) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, model: str, text: str) -> str:
        return self.keys.emb(model, _sha(text))

    def embed(
        self, model: str, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]
    ) -> tuple[np.ndarray, int]:
        """Vectors of `model` for `texts`, computing only the ones not cached; also returns
        how many were computed."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32), 0
        cached = get_many(self.client, [self._key(model, t) for t in texts])
        missing = sorted({t for t, blob in zip(texts, cached, strict=True) if blob is None})
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = np.asarray(compute(missing), dtype=np.float32)
            fresh = dict(zip(missing, vectors, strict=True))
            with self.client.pipeline(transaction=False) as pipe:
                for text, vector in fresh.items():
                    pipe.set(self._key(model, text), pack(vector), ex=self.ttl_s)
                pipe.execute()
        rows = [
            fresh[t] if blob is None else unpack(blob)
            for t, blob in zip(texts, cached, strict=True)
        ]
        return np.vstack(rows).astype(np.float32, copy=False), len(missing)

    def get(self, model: str, text: str) -> np.ndarray | None:
        """The cached vector of one text, or None."""
        blob = self.client.get(self._key(model, text))
        return unpack(blob) if isinstance(blob, bytes) else None

    def put(self, model: str, text: str, vector: np.ndarray) -> None:
        self.client.set(self._key(model, text), pack(vector), ex=self.ttl_s)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
