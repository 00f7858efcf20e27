"""A real Antenna database for tests: Antenna's schema dump (200 migrations' worth) and reference
rows loaded into a schema of the test session's own, with our machinery beside it, and the
runnable recipe (docs/antenna-db.md section 6) that makes a project, captures, a pipeline,
a user with a token and a CREATED async_api job exactly as Antenna's rows look.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest_asyncio
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool

from antenna_db.schema import ANTENNA
from antenna_db.seed import new_capture_set
from core.settings import DatabaseSettings, Settings
from storage.migrate import migrate
from storage.pool import open_pool
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


@contextlib.asynccontextmanager
async def antenna_schema(
    base: DatabaseSettings, prefix: str, *, offset_ids: bool = True, views: bool = False
) -> AsyncIterator[DatabaseSettings]:
    """Antenna's tables (made by Antenna's migrations: schema.sql) in schemas of their own,
    migrated by ``db migrate`` (which checks them), dropped at the end. ``offset_ids``: job ids
    start far from other sessions' (they name NATS streams shared with them)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db = base.model_copy(update={"schema_name": schema, "jobs_schema": f"{schema}_jobs"})
    await load_antenna_schema(db.url, schema)
    try:
        await migrate(db, ANTENNA)
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            if offset_ids:
                offset = random.randint(10**8, 10**12)
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{schema}.jobs_job', 'id'), {offset})"
                )
            if views:
                await create_views(conn, f"{db.jobs_schema},{schema}")
        yield db
    finally:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            for name in (db.jobs_schema, schema):
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest_asyncio.fixture(scope="session")
async def antenna_database(session_settings: Settings) -> AsyncIterator[DatabaseSettings]:
    """An Antenna database (its own tables, made by Antenna's migrations) that antenna-jobs is
    pointed at: ``db migrate`` finds Antenna's tables and only adds our schema."""
    async with antenna_schema(session_settings.database, "aj_real", views=True) as db:
        yield db


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
            name = f"set {uuid.uuid4().hex[:8]}"
            collection = await new_capture_set(conn, recipe["project"], name)
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
        await _cancel_row_as_antenna(conn, job_id)


async def _cancel_row_as_antenna(conn: Any, job_id: int) -> None:
    """Antenna's Job.cancel on the row: guarded CANCELING, then guarded REVOKED."""
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


# --- Antenna's UI's view of a job, and Antenna's own NATS clean-up on cancel -------------------


@dataclass(frozen=True)
class AntennaJobView:
    """A job as Antenna's job detail serializer gives it to its UI (docs/antenna-db.md
    section 3): the row's status and progress, ``logs.stdout`` (jobs_joblog newest first, 1000
    lines, ``[YYYY-mm-dd HH:MM:SS] LEVEL message``) and ``logs.stderr`` (those at ERROR or
    CRITICAL: the UI's red Errors box, with ``progress.errors``)."""

    status: str
    progress: dict[str, Any]
    stdout: list[str]
    stderr: list[str]

    @property
    def errors(self) -> list[str]:
        return self.stderr + list(self.progress.get("errors") or [])

    def params(self, stage: str) -> dict[str, Any]:
        """``progress.stages[key=stage].params`` as the stage panel shows them, by key."""
        for found in self.progress["stages"]:
            if found["key"] == stage:
                return {p["key"]: p["value"] for p in found["params"]}
        raise KeyError(stage)

    def lines(self, level: str) -> list[str]:
        """The messages of ``level``, oldest first, without their time and level."""
        marker = f"] {level} "
        return [line.split(marker, 1)[1] for line in reversed(self.stdout) if marker in line]


async def antenna_ui_view(pool: AsyncConnectionPool[Any], job_id: int) -> AntennaJobView:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, progress, logs FROM jobs_job WHERE id = %s", (job_id,)
        )
        job = await cur.fetchone()
        assert job is not None
        cur = await conn.execute(
            "SELECT created_at, level, message FROM jobs_joblog WHERE job_id = %s"
            " ORDER BY created_at DESC, id DESC LIMIT 1000",
            (job_id,),
        )
        rows = await cur.fetchall()
    if not rows:  # Antenna's fallback: the deprecated logs column
        return AntennaJobView(job["status"], job["progress"], **job["logs"])
    stdout = [f"[{r['created_at']:%Y-%m-%d %H:%M:%S}] {r['level']} {r['message']}" for r in rows]
    stderr = [
        line for line, r in zip(stdout, rows, strict=True) if r["level"] in {"ERROR", "CRITICAL"}
    ]
    return AntennaJobView(job["status"], job["progress"], stdout, stderr)


async def antenna_job_log(
    pool: AsyncConnectionPool[Any], job_id: int, level: str, msg: str
) -> None:
    """A line as Antenna's job.logger writes it (JobLogHandler.emit: one row, the level's name)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO jobs_joblog (created_at, updated_at, level, message, context, job_id)"
            " VALUES (now(), now(), %s, %s, '{}'::jsonb, %s)",
            (level, msg, job_id),
        )


async def cancel_with_antennas_cleanup(
    pool: AsyncConnectionPool[Any], js: Any, redis_client: Any, job_id: int
) -> None:
    """Antenna's Cancel button on an async job, as its request runs it (docs/antenna-jobs.md
    section 3; our own re-implementation of Antenna's code path): in the request's one
    transaction (ATOMIC_REQUESTS) the guarded CANCELING and REVOKED, then
    ``cleanup_async_job_resources``: the Redis keys, then ``TaskQueueManager
    .cleanup_job_resources`` with the job's logger: the consumer's final stats, delete consumer
    ``job-{id}-consumer``, delete stream ``job_{id}``, delete the DLQ consumer (not found is
    fine), each failure an ERROR line of the job, and a WARNING if any failed. The row commits at
    the end of the request, after the clean-up."""
    stream, consumer = f"job_{job_id}", f"job-{job_id}-consumer"
    async with pool.connection() as conn, conn.transaction():
        await _cancel_row_as_antenna(conn, job_id)
        # AsyncJobStateManager.cleanup(): DEL of its four keys.
        await redis_client.delete(
            f"job:{job_id}:pending_images:process",
            f"job:{job_id}:pending_images:results",
            f"job:{job_id}:failed_images",
            f"job:{job_id}:pending_images_total",
        )
        await antenna_job_log(pool, job_id, "INFO", f"Cleaned up Redis state for job {job_id}")
        try:
            info = await js.consumer_info(stream, consumer)
            await antenna_job_log(
                pool,
                job_id,
                "INFO",
                f"Finalizing NATS consumer {consumer} before deletion (delivered="
                f"{info.delivered.consumer_seq} ack_floor={info.ack_floor.consumer_seq}"
                f" num_pending={info.num_pending} num_ack_pending={info.num_ack_pending}"
                f" num_redelivered={info.num_redelivered})",
            )
        except Exception:  # Antenna skips the stats line whatever the error
            pass
        ok = True
        for kind, name, delete in (
            ("consumer", consumer, lambda: js.delete_consumer(stream, consumer)),
            ("stream", stream, lambda: js.delete_stream(stream)),
        ):
            try:
                await delete()
                await antenna_job_log(
                    pool, job_id, "INFO", f"Deleted NATS {kind} {name} for job '{job_id}'"
                )
            except Exception as err:  # as Antenna's delete_consumer / delete_stream
                ok = False
                await antenna_job_log(
                    pool, job_id, "ERROR", f"Failed to delete NATS {kind} for job '{job_id}': {err}"
                )
        with contextlib.suppress(NotFoundError):  # "not found" counts as deleted
            await js.delete_consumer("advisories", f"job-{job_id}-dlq")
        if ok:
            await antenna_job_log(
                pool, job_id, "INFO", f"Cleaned up NATS resources for job {job_id}"
            )
        else:
            await antenna_job_log(
                pool, job_id, "WARNING", f"Failed to clean up NATS resources for job {job_id}"
            )
