"""PostgreSQL connections: the psycopg 3 async pool every process opens, and the settings each
connection gets (search_path, time zone, no JIT, rows as dicts, JSON read by core.json_codec)."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.array import ListBinaryDumper
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from core import json_codec
from core.settings import DatabaseSettings

# The pool every process opens: connections whose rows are dicts.
Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


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
