"""Invalidating Antenna's ORM query cache (django-cachalot) for the tables we wrote.

Cachalot caches every SELECT of Antenna's ORM in its Django cache (Redis) and only learns of
writes made by Django itself: after a raw write, Antenna keeps serving the old rows. Setting a
table's invalidation key to "now" (what ``cachalot.api.invalidate()`` writes: django-redis key
prefix '', version 1, a pickled float, no expiry) makes every cached query on it stale
(reference/antenna-db.md section 0).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


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
