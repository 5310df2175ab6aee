"""Keys, the exact store, the single-flight lease and wake-ups. Imports nothing of ours."""

from cache.entry import Entry, Outcome
from cache.keys import CacheKey, normalise_text
from cache.lease import Lease
from cache.store import ExactStore
from cache.wakeup import WakeupHub

__all__ = ["CacheKey", "Entry", "ExactStore", "Lease", "Outcome", "WakeupHub", "normalise_text"]
