"""A bounded, expiring map for per-process state kept per request key (pipeline slugs, token
hashes, throttled log keys): whatever callers send, it never holds more than ``max_size``
entries nor any entry older than ``ttl`` seconds once the next one is put.

Entries are kept in the order they were last put (an OrderedDict), so the expired ones are
always at the front: pruning on each ``put`` costs only what it removes, and past ``max_size``
the least recently put goes first (LRU by write).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    def __init__(
        self, ttl: float, max_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        # Public: a test may shorten or lengthen it; entries already put follow the new value.
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, put_at: float, now: float) -> bool:
        return now - put_at < self.ttl

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or not self._fresh(entry[1], self._clock()):
            return None
        return entry[0]

    def __contains__(self, key: object) -> bool:
        entry = self._entries.get(key)  # type: ignore[arg-type]
        return entry is not None and self._fresh(entry[1], self._clock())

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        self._entries[key] = (value, now)
        self._entries.move_to_end(key)
        self.prune(now)

    def prune(self, now: float | None = None) -> None:
        """Drop the expired entries, then the oldest past ``max_size``."""
        now = self._clock() if now is None else now
        entries = self._entries
        while entries:
            _, (_, put_at) = next(iter(entries.items()))
            if self._fresh(put_at, now) and len(entries) <= self.max_size:
                break
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def items(self) -> Iterator[tuple[K, V]]:
        """The fresh entries, oldest first."""
        now = self._clock()
        for key, (value, put_at) in list(self._entries.items()):
            if self._fresh(put_at, now):
                yield key, value
