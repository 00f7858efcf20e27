"""Invalidating Antenna's ORM query cache (django-cachalot) for the tables we wrote.

Cachalot caches every SELECT of Antenna's ORM in its Django cache (Redis) and only learns of
writes made by Django itself: after a raw write, Antenna keeps serving the old rows (its job log,
capture lists, counts). Setting a table's invalidation key to "now" (what
``cachalot.api.invalidate()`` writes: django-redis key prefix '', version 1, a pickled float, no
expiry) makes every cached query on it stale (docs/antenna-db.md section 0).

Writers here say what they wrote with ``wrote(table, ...)``: right after an autocommitted write,
or, for a transaction, after its commit. A process that is pointed at Antenna's cache (worker,
API, bridge) installs an ``Invalidations`` that sends them, coalesced, a few milliseconds later;
standalone nothing is installed and ``wrote`` costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import time
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Writes within this long of each other share one round trip to the cache.
COALESCE_SECONDS = 0.02


def table_key(table: str, db_alias: str = "default") -> str:
    return ":1:" + hashlib.sha1(f"{db_alias}:{table}".encode()).hexdigest()


class CachalotInvalidator:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def invalidate(self, tables: Iterable[str]) -> None:
        """Best effort: a cache that cannot be reached only means Antenna shows stale rows."""
        stamp = pickle.dumps(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for table in tables:
            pipe.set(table_key(table), stamp)
        try:
            await pipe.execute()
        except (RedisError, OSError) as err:
            log.warning("could not invalidate Antenna's query cache: %s", err)


class Invalidations:
    """Tables written, sent to the invalidator shortly after (coalesced), in the background."""

    def __init__(self, invalidator: CachalotInvalidator, delay: float = COALESCE_SECONDS) -> None:
        self._invalidator = invalidator
        self._delay = delay
        self._pending: set[str] = set()
        self._flush: asyncio.Task[None] | None = None

    def wrote(self, tables: Iterable[str]) -> None:
        self._pending.update(tables)
        if self._pending and (self._flush is None or self._flush.done()):
            self._flush = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self._delay)
        await self.flush()

    async def flush(self) -> None:
        tables, self._pending = self._pending, set()
        if tables:
            await self._invalidator.invalidate(sorted(tables))

    async def close(self) -> None:
        if self._flush is not None and not self._flush.done():
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        await self.flush()


_installed: Invalidations | None = None


def install(invalidations: Invalidations | None) -> None:
    """This process's cache invalidations (None: none, e.g. standalone)."""
    global _installed
    _installed = invalidations


def wrote(*tables: str) -> None:
    """Antenna tables just written (and committed, or about to be)."""
    if _installed is not None:
        _installed.wrote(tables)


@contextlib.asynccontextmanager
async def installed(cache_url: str | None) -> AsyncIterator[None]:
    """For a process's lifetime: invalidations sent to the cache at ``cache_url`` (if any).
    Nested uses (a worker and the API in one process) share the first one."""
    if not cache_url or _installed is not None:
        yield
        return
    cache = aioredis.Redis.from_url(cache_url)
    invalidations = Invalidations(CachalotInvalidator(cache))
    install(invalidations)
    try:
        yield
    finally:
        install(None)
        await invalidations.close()
        await cache.aclose()
