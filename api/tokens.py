"""API tokens: ``Authorization: Token <key>``; only the sha256 of a key is ever stored.

Verification is on every request, so valid keys are cached briefly in-process and
``last_used_at`` is written at most once a minute per token (the column is informational; a
write per request would make every worker poll a row update).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# A deleted token keeps working in a running API process for at most this long.
CACHE_SECONDS = 30.0
LAST_USED_WRITE_SECONDS = 60.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_token(conn: AsyncConnection[Any], name: str) -> str:
    """Create a token named ``name``; returns its key, which is shown once and never stored."""
    key = secrets.token_hex(20)
    await conn.execute(
        "INSERT INTO api_tokens (name, key_hash) VALUES (%s, %s)", (name, hash_key(key))
    )
    return key


class TokenVerifier:
    """Checks keys against api_tokens, with a short positive cache and throttled last_used_at."""

    def __init__(self, pool: Pool, db_timeout: float) -> None:
        self._pool = pool
        self._db_timeout = db_timeout
        # key hash -> (token id, monotonic expiry)
        self._valid: dict[str, tuple[int, float]] = {}
        self._last_write: dict[int, float] = {}

    async def verify(self, key: str) -> int | None:
        """The token's id if ``key`` is valid, else None."""
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._valid.get(digest)
        if cached is not None and cached[1] > now:
            token_id = cached[0]
        else:
            async with self._pool.connection(timeout=self._db_timeout) as conn:
                cur = await conn.execute("SELECT id FROM api_tokens WHERE key_hash = %s", (digest,))
                row = await cur.fetchone()
            if row is None:
                self._valid.pop(digest, None)
                return None
            token_id = int(row["id"])
            if len(self._valid) > 10_000:
                self._valid.clear()
            self._valid[digest] = (token_id, now + CACHE_SECONDS)
        if (
            now - self._last_write.get(token_id, -LAST_USED_WRITE_SECONDS)
            >= LAST_USED_WRITE_SECONDS
        ):
            self._last_write[token_id] = now
            await self._touch(token_id)
        return token_id

    async def _touch(self, token_id: int) -> None:
        # Guarded in SQL too, so several API processes together still write about once a minute.
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = %s"
                " AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s))",
                (token_id, LAST_USED_WRITE_SECONDS),
            )
