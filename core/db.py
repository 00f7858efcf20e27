"""PostgreSQL connections (psycopg 3 async pool) and the versioned migrations that shape them."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from core.settings import DatabaseSettings

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x616E7465


def connect_kwargs(settings: DatabaseSettings) -> dict[str, object]:
    return {
        "options": f"-c search_path={settings.schema_name}",
        "autocommit": True,
        "row_factory": dict_row,
    }


class _SweepingCheck:
    """The pool's checkout check: a connection killed by the server (restart, failover,
    pg_terminate_backend) is replaced. One dead connection usually means every idle one died
    with it; the pool would find them one checkout at a time, backing off 1, 2, 4... s between
    them (seen: 12-15 s of stall), so the first failure has the pool test all of them at once."""

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection] | None = None
        self._sweep: asyncio.Task[None] | None = None

    async def __call__(self, conn: psycopg.AsyncConnection) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and (self._sweep is None or self._sweep.done()):
                self._sweep = asyncio.create_task(self.pool.check())
            raise


async def open_pool(settings: DatabaseSettings) -> AsyncConnectionPool[psycopg.AsyncConnection]:
    """Open a pool whose connections see the configured schema and return rows as dicts."""
    check = _SweepingCheck()
    pool: AsyncConnectionPool[psycopg.AsyncConnection] = AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs=connect_kwargs(settings),
        check=check,
        open=False,
    )
    check.pool = pool
    await pool.open(wait=True, timeout=30)
    return pool


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in core/migrations, in order."""
    found = []
    for entry in resources.files("core.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(settings: DatabaseSettings) -> list[str]:
    """Apply the migrations not yet applied; returns their names. Safe to run concurrently."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(settings.url, autocommit=True) as conn:
        schema = sql.Identifier(settings.schema_name)
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        await conn.execute(sql.SQL("SET search_path TO {}").format(schema))
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, name, text in migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(text.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
