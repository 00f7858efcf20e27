"""A real Antenna database for tests: Antenna's schema dump (200 migrations' worth) and reference
rows loaded into a schema of the test session's own, with our machinery beside it, and the
runnable recipe (reference/antenna-db.md section 7) that makes a project, captures, a pipeline,
a user with a token and a CREATED async_api job exactly as Antenna's rows look.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from core.db import migrate, open_pool
from core.settings import DatabaseSettings, Settings
from tests.helpers.db import create_views

FIXTURES = Path(__file__).parent.parent / "fixtures" / "antenna"


async def load_antenna_schema(url: str, schema: str) -> None:
    """schema.sql and reference-rows.sql into ``schema`` (made here)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        for name in ("schema.sql", "reference-rows.sql"):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                await conn.execute((FIXTURES / name).read_bytes())


@pytest_asyncio.fixture(scope="session")
async def antenna_database(session_settings: Settings) -> AsyncIterator[DatabaseSettings]:
    """An Antenna database (its own tables, made by Antenna's migrations) that antenna-jobs is
    pointed at: ``db migrate`` finds Antenna's tables and only adds our schema."""
    schema = f"aj_real_{uuid.uuid4().hex[:10]}"
    db = session_settings.database.model_copy(
        update={"schema_name": schema, "jobs_schema": f"{schema}_jobs"}
    )
    await load_antenna_schema(db.url, schema)
    try:
        await migrate(db)
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            offset = random.randint(10**8, 10**12)
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{schema}.jobs_job', 'id'), {offset})"
            )
            await create_views(conn, f"{db.jobs_schema},{schema}")
        yield db
    finally:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            for name in (db.jobs_schema, schema):
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest_asyncio.fixture(scope="session")
async def antenna_pool(
    antenna_database: DatabaseSettings,
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool = await open_pool(antenna_database)
    try:
        yield pool
    finally:
        await pool.close()


@dataclass(frozen=True)
class Recipe:
    """The recipe's rows (its temp table r) and the user's token."""

    ids: dict[str, int]
    token: str

    def __getitem__(self, key: str) -> int:
        return self.ids[key]


async def run_recipe(pool: AsyncConnectionPool[Any]) -> Recipe:
    """recipe.sql in one transaction, as the reference gives it (once per database: its names,
    slugs and email are fixed)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute((FIXTURES / "recipe.sql").read_bytes())
        cur = await conn.execute("SELECT k, v FROM r")
        ids = {r["k"]: int(r["v"]) for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT key FROM authtoken_token WHERE user_id = %s", (ids["user"],)
        )
        row = await cur.fetchone()
        assert row is not None
    return Recipe(ids=ids, token=row["key"])


@pytest_asyncio.fixture(scope="session")
async def antenna_recipe(antenna_pool: AsyncConnectionPool[Any]) -> Recipe:
    """The recipe's rows, made once per session's Antenna database (its names are fixed)."""
    return await run_recipe(antenna_pool)


async def add_captures(
    pool: AsyncConnectionPool[Any], recipe: Recipe, n: int, *, collection: int | None = None
) -> int:
    """``n`` more captures of the recipe's station and session, written as the recipe writes
    captures, in ``collection`` or a capture set of their own; the set's id."""
    async with pool.connection() as conn, conn.transaction():
        if collection is None:
            cur = await conn.execute(
                "INSERT INTO main_sourceimagecollection (created_at, updated_at, name,"
                " description, method, kwargs, project_id)"
                " VALUES (now(), now(), %s, '', 'manual', '{}'::jsonb, %s) RETURNING id",
                (f"set {uuid.uuid4().hex[:8]}", recipe["project"]),
            )
            collection = int((await cur.fetchone() or {})["id"])
        await conn.execute(
            "WITH new AS (INSERT INTO main_sourceimage (created_at, updated_at, path,"
            ' public_base_url, "timestamp", test_image, deployment_id, event_id, project_id)'
            " SELECT now(), now(), format('2024-06-01/%%s/%%s.jpg', %(tag)s::text, i),"
            " 'https://example.org/recipe-bucket/', timestamptz '2024-06-01 22:00:00-04'"
            " + make_interval(secs => i), false, %(dep)s, %(event)s, %(project)s"
            " FROM generate_series(1, %(n)s) AS i RETURNING id)"
            " INSERT INTO main_sourceimagecollection_images (sourceimagecollection_id,"
            " sourceimage_id) SELECT %(collection)s, id FROM new",
            {
                "tag": uuid.uuid4().hex[:8],
                "dep": recipe["deployment"],
                "event": recipe["event"],
                "project": recipe["project"],
                "n": n,
                "collection": collection,
            },
        )
    return collection


async def new_antenna_job(pool: AsyncConnectionPool[Any], recipe: Recipe, collection: int) -> int:
    """A CREATED async_api ML job on ``collection``, as Antenna's API creates it (the recipe's
    job row, with its progress stages, for another capture set)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO jobs_job (created_at, updated_at, name, queue, scheduled_at, started_at,"
            ' finished_at, status, progress, logs, params, result, task_id, delay, "limit",'
            " shuffle, job_type_key, project_id, deployment_id, source_image_single_id,"
            " source_image_collection_id, data_export_id, pipeline_id, dispatch_mode)"
            " SELECT now(), now(), 'Another ML job', queue, NULL, NULL, NULL, 'CREATED',"
            " progress, logs, NULL, NULL, NULL, 0, NULL, true, 'ml', project_id, NULL, NULL,"
            " %s, NULL, pipeline_id, 'async_api' FROM jobs_job WHERE id = %s RETURNING id",
            (collection, recipe["job"]),
        )
        return int((await cur.fetchone() or {})["id"])


async def enqueue_as_antenna(pool: AsyncConnectionPool[Any], job_id: int) -> str:
    """What Antenna's Job.enqueue writes before it sends run_job; the new task id."""
    task_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET status = 'PENDING', task_id = %s, scheduled_at = now(),"
            " started_at = NULL, finished_at = NULL, updated_at = now() WHERE id = %s",
            (task_id, job_id),
        )
    return task_id


async def retry_as_antenna(pool: AsyncConnectionPool[Any], job_id: int) -> None:
    """Antenna's Job.retry: finished_at cleared, progress reset (stages CREATED at 0, numbers
    0), RETRY; its enqueue follows."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET finished_at = NULL, status = 'RETRY', updated_at = now(),"
            " progress = jsonb_set(jsonb_set(progress, '{summary}',"
            ' \'{"status": "CREATED", "progress": 0.0}\'), \'{stages}\', (SELECT jsonb_agg('
            ' s || \'{"status": "CREATED", "progress": 0.0}\' || jsonb_build_object(\'params\','
            " (SELECT jsonb_agg(CASE WHEN jsonb_typeof(p->'value') = 'number'"
            " THEN p || '{\"value\": 0}' ELSE p END) FROM jsonb_array_elements(s->'params') p)))"
            " FROM jsonb_array_elements(progress->'stages') s)) WHERE id = %s",
            (job_id,),
        )


async def cancel_as_antenna(pool: AsyncConnectionPool[Any], job_id: int) -> None:
    """Antenna's Job.cancel of an async job: guarded CANCELING, then guarded REVOKED with
    finished_at (its NATS and Redis clean-up is the test's to do)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET status = 'CANCELING', updated_at = now() WHERE id = %s"
            " AND status IN ('CREATED', 'PENDING', 'STARTED', 'RETRY')",
            (job_id,),
        )
        await conn.execute(
            "UPDATE jobs_job SET status = 'REVOKED', finished_at = now(), updated_at = now()"
            " WHERE id = %s AND status IN ('CREATED', 'PENDING', 'STARTED', 'RETRY', 'CANCELING')",
            (job_id,),
        )
