"""Keys, stores, the single-flight lease, the semantic index and wake-ups.

Imports nothing of ours; takes every setting as a constructor argument.
"""

from cache.embcache import EmbeddingCache
from cache.entry import Entry, Outcome
from cache.inflight import InFlightPrompts
from cache.keys import CacheKey, normalise_text
from cache.keyspace import Keyspace
from cache.lease import Follower, Lease
from cache.semantic import Candidate, SemanticIndex
from cache.store import ExactStore
from cache.wakeup import WakeupHub

__all__ = [
    "CacheKey",
    "Candidate",
    "EmbeddingCache",
    "Entry",
    "ExactStore",
    "Follower",
    "InFlightPrompts",
    "Keyspace",
    "Lease",
    "Outcome",
    "SemanticIndex",
    "WakeupHub",
    "normalise_text",
]
