"""A scratch database for a benchmark run: the standalone Antenna tables and ours in two schemas
of the run's own (job ids offset far from other runs', since they name streams and Redis keys),
dropped at the end."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg

from antenna_db.schema import ANTENNA
from core.settings import DatabaseSettings
from storage.migrate import migrate


@asynccontextmanager
async def scratch_database(base: DatabaseSettings | None = None) -> AsyncIterator[DatabaseSettings]:
    schema = f"aj_bench_{uuid.uuid4().hex[:8]}"
    db = (base or DatabaseSettings()).model_copy(
        update={"schema_name": schema, "jobs_schema": f"{schema}_jobs"}
    )
    await migrate(db, ANTENNA)
    try:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            sequence = f"pg_get_serial_sequence('{schema}.jobs_job', 'id')"
            await conn.execute(f"SELECT setval({sequence}, {random.randint(10**8, 10**12)})")
        yield db
    finally:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            for name in (db.jobs_schema, schema):
                with suppress(psycopg.Error):
                    await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
