"""PostgreSQL connections (psycopg 3 async pool) and the versioned migrations that shape them."""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.array import ListBinaryDumper
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from core import json_codec
from core.settings import DatabaseSettings

# The pool every process opens: connections whose rows are dicts.
Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x616E7465


def search_path(settings: DatabaseSettings) -> str:
    """Our schema first, then Antenna's, then public (where extensions such as pg_trgm live):
    unqualified names find either kind of table."""
    return ",".join(dict.fromkeys([settings.jobs_schema, settings.schema_name, "public"]))


def connect_kwargs(settings: DatabaseSettings) -> dict[str, object]:
    return {
        # UTC, so a naive value anywhere is read as UTC (Antenna's Django writes New York time
        # into timestamptz; we only ever write aware values or now()).
        # No JIT: every statement of ours is a short per-batch one, and the skewed statistics of
        # Antenna's occurrence_id columns give them estimated costs in the millions, over the JIT
        # threshold: compiling took 335 ms of a 398 ms determination (32 ms without).
        "options": f"-c search_path={search_path(settings)} -c TimeZone=UTC -c jit=off",
        "autocommit": True,
        "row_factory": dict_row,
    }


async def _configure(conn: psycopg.AsyncConnection) -> None:
    # json/jsonb values read by msgspec (3x faster than the stdlib), what it refuses but
    # PostgreSQL stores (1e400) by the stdlib.
    set_json_loads(json_codec.loads, conn)
    # Lists go as binary arrays: every batch statement takes its rows as arrays, and the text
    # form escapes each element with a regex (a JSON payload: one substitution per quote).
    # Measured on 24 result payloads: 1.9 -> 0.5 ms; 500 timestamps 1.9 -> 0.3 ms.
    conn.adapters.register_dumper(list, ListBinaryDumper)


class _SweepingCheck:
    """The pool's checkout check: a connection killed by the server (restart, failover,
    pg_terminate_backend) is replaced. One dead connection usually means every idle one died
    with it; the pool would find them one checkout at a time, backing off 1, 2, 4... s between
    them (seen: 12-15 s of stall), so the first failure has the pool test all of them at once.

    A connection given back less than ``BYPASS_SECONDS`` ago is not tested (HikariCP's
    aliveBypassWindow): the test is a round trip, and a busy API checks a connection out several
    times per request (7% of its time on a 100,000-image job). One killed in that window fails
    its statement instead: the request answers 503, an activity retries."""

    BYPASS_SECONDS = 0.5

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def returned(self, conn: psycopg.AsyncConnection) -> None:
        """The pool's reset callback: when the connection came back, idle and healthy."""
        self._returned[conn] = time.monotonic()

    async def __call__(self, conn: psycopg.AsyncConnection) -> None:
        returned = self._returned.pop(conn, None)
        if returned is not None and time.monotonic() - returned < self.BYPASS_SECONDS:
            return
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
        reset=check.returned,
        configure=_configure,
        open=False,
    )
    check.pool = pool
    await pool.open(wait=True, timeout=30)
    return pool


class MigrationError(RuntimeError):
    """The database cannot be brought to the shape antenna-jobs needs (said why)."""


# Antenna tables antenna-jobs reads or writes; an Antenna database must have all of them.
REQUIRED_ANTENNA_TABLES = (
    "jobs_job",
    "jobs_joblog",
    "main_project",
    "main_sourceimage",
    "main_sourceimagecollection",
    "main_sourceimagecollection_images",
    "main_detection",
    "main_classification",
    "main_occurrence",
    "main_taxon",
    "ml_pipeline",
    "ml_algorithm",
    "ml_processingservice",
    "authtoken_token",
    "users_user",
)


def migrations(package: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in ``package``, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def _apply(
    conn: psycopg.AsyncConnection[Any], scope: str, package: str, schema: str, jobs_schema: str
) -> list[str]:
    """Run ``package``'s migrations not yet recorded under ``scope``, each in ``schema``."""
    record = sql.SQL(
        "INSERT INTO {}.schema_migrations (scope, version, name) VALUES (%s, %s, %s)"
    ).format(sql.Identifier(jobs_schema))
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations WHERE scope = %s").format(
            sql.Identifier(jobs_schema)
        ),
        (scope,),
    )
    done = {row[0] for row in await cur.fetchall()}
    applied = []
    for version, name, text in migrations(package):
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema))
            )
            await conn.execute(text.encode())
            await conn.execute(record, (scope, version, name))
        applied.append(f"{scope}:{name}")
    return applied


async def _antenna_tables(conn: psycopg.AsyncConnection[Any], schema: str) -> set[str]:
    cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {row[0] for row in await cur.fetchall()}


async def migrate(settings: DatabaseSettings) -> list[str]:
    """Bring the database to the shape antenna-jobs needs; returns what was applied.

    Our own tables go in ``jobs_schema``. Antenna's tables are used where they are: on an
    Antenna database (``jobs_job`` present, not created by us) nothing of Django's is touched,
    only checked; on a bare database the Antenna tables antenna-jobs uses are created in
    ``schema_name``, in Antenna's exact shape (antenna_db/standalone). Safe to run concurrently.
    """
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(settings.url, autocommit=True) as conn:
        jobs = sql.Identifier(settings.jobs_schema)
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(jobs))
            await conn.execute(sql.SQL("SET search_path TO {}").format(jobs))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " scope text NOT NULL, version integer NOT NULL, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, version))"
            )
            cur = await conn.execute(
                "SELECT count(*) FROM schema_migrations WHERE scope = 'antenna'"
            )
            row = await cur.fetchone()
            ours = bool(row and row[0])
            tables = await _antenna_tables(conn, settings.schema_name)
            if ours or "jobs_job" not in tables:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(settings.schema_name)
                    )
                )
                applied += await _apply(
                    conn,
                    "antenna",
                    "antenna_db.standalone",
                    settings.schema_name,
                    settings.jobs_schema,
                )
            else:
                missing = [t for t in REQUIRED_ANTENNA_TABLES if t not in tables]
                if missing:
                    raise MigrationError(
                        f"schema {settings.schema_name!r} has jobs_job but lacks Antenna's"
                        f" {', '.join(missing)}: is it an Antenna database?"
                    )
            applied += await _apply(
                conn, "jobs", "storage.migrations", settings.jobs_schema, settings.jobs_schema
            )
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
