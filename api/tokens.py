"""``Authorization: Token <key>`` checked against Antenna's tokens (antenna_db/users.py).

Verification is on every request, so callers are cached briefly in-process: a revoked token or
a deactivated user keeps working in a running API process for at most CACHE_SECONDS.
"""

from __future__ import annotations

import time

from antenna_db import users
from antenna_db.users import Caller
from core.db import Pool

CACHE_SECONDS = 30.0
_MAX_CACHED = 10_000


class TokenVerifier:
    def __init__(self, pool: Pool, db_timeout: float) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        # key hash -> (caller or None, monotonic expiry); misses are cached too (a bad token
        # polled in a loop costs no query each time).
        self._cache: dict[str, tuple[Caller | None, float]] = {}

    async def caller(self, key: str) -> Caller | None:
        """The token's user (possibly inactive or expired: the caller says why 401), or None."""
        digest = users.key_hash(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            found = await users.caller(conn, key)
        if len(self._cache) >= _MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[digest] = (found, now + CACHE_SECONDS)
        return found


class PermissionCache:
    """has_perm answers, cached as briefly as callers (one query per miss)."""

    def __init__(self, pool: Pool, db_timeout: float) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        self._cache: dict[tuple[int, str, int], tuple[bool, float]] = {}

    async def has(self, who: Caller, codename: str, project_id: int) -> bool:
        if who.is_superuser:
            return who.is_active
        key = (who.user_id, codename, project_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            allowed = await users.has_perm(conn, who.user_id, codename, project_id)
        if len(self._cache) >= _MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[key] = (allowed, now + CACHE_SECONDS)
        return allowed
