"""``Authorization: Token <key>`` checked against Antenna's tokens (antenna_db/users.py).

Verification is on every request, so callers are cached briefly in-process: a revoked token or
a deactivated user keeps working in a running API process for at most CACHE_SECONDS.
"""

from __future__ import annotations

from antenna_db import users
from antenna_db.users import Caller
from core.expiring import ExpiringMap
from storage.pool import Pool

CACHE_SECONDS = 30.0
_MAX_CACHED = 10_000


class TokenVerifier:
    def __init__(self, pool: Pool, db_timeout: float) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        # key hash -> (caller or None, monotonic expiry); misses are cached too (a bad token
        # polled in a loop costs no query each time).
        self._cache: ExpiringMap[str, tuple[Caller | None]] = ExpiringMap(
            CACHE_SECONDS, _MAX_CACHED
        )

    async def caller(self, key: str) -> Caller | None:
        """The token's user (possibly inactive or expired: the caller says why 401), or None."""
        digest = users.key_hash(key)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached[0]
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            found = await users.caller(conn, key)
        self._cache.put(digest, (found,))
        return found


class PermissionCache:
    """has_perm answers, cached as briefly as callers (one query per miss)."""

    def __init__(self, pool: Pool, db_timeout: float) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        self._cache: ExpiringMap[tuple[int, str, int], bool] = ExpiringMap(
            CACHE_SECONDS, _MAX_CACHED
        )
        self._projects: ExpiringMap[tuple[int, str], frozenset[int]] = ExpiringMap(
            CACHE_SECONDS, _MAX_CACHED
        )

    async def has(self, who: Caller, codename: str, project_id: int) -> bool:
        if who.is_superuser:
            return who.is_active
        key = (who.user_id, codename, project_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            allowed = await users.has_perm(conn, who.user_id, codename, project_id)
        self._cache.put(key, allowed)
        return allowed

    async def projects_with(self, who: Caller, codename: str) -> frozenset[int] | None:
        """The projects on which the caller holds ``codename`` (None: every one, a superuser)."""
        if who.is_superuser:
            return None
        key = (who.user_id, codename)
        cached = self._projects.get(key)
        if cached is not None:
            return cached
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            projects = frozenset(await users.projects_with_perm(conn, who.user_id, codename))
        self._projects.put(key, projects)
        return projects
