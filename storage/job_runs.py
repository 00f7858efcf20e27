"""Which workflow run owns a job now, its consumer, and its counters (table ``job_runs``).

A new run resets the counters; every recorded outcome adds to them in the transaction that moves
the images, so they are exact after any crash and cost no count(*) on a restart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from core.counters import AggregateCounters


class JobRun(BaseModel):
    job_id: int
    run_id: str
    consumer: str
    counters: AggregateCounters


async def take(
    conn: AsyncConnection[Any],
    job_id: int,
    run_id: str,
    consumer: str,
    trace_context: str | None = None,
) -> bool:
    """Make ``run_id`` the job's run (counters from zero); True if it was not already.
    ``trace_context``: the run's traceparent, when traced (core/tracing.py)."""
    cur = await conn.execute(
        "INSERT INTO job_runs (job_id, run_id, consumer, trace_context) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (job_id) DO UPDATE SET run_id = EXCLUDED.run_id,"
        "  consumer = EXCLUDED.consumer, started_at = now(), total = 0, processed = 0,"
        "  failed = 0, detections = 0, classifications = 0, updated_at = now(),"
        "  paused_at = NULL, collected_at = NULL, schema_error = NULL, schema_error_since = NULL,"
        " trace_context = EXCLUDED.trace_context"
        " WHERE job_runs.run_id <> EXCLUDED.run_id",
        (job_id, run_id, consumer, trace_context),
    )
    return cur.rowcount == 1


async def get(conn: AsyncConnection[Any], job_id: int) -> JobRun | None:
    cur = await conn.execute(
        "SELECT job_id, run_id, consumer, total, processed, failed, detections, classifications"
        " FROM job_runs WHERE job_id = %s",
        (job_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return JobRun(
        job_id=row["job_id"],
        run_id=row["run_id"],
        consumer=row["consumer"],
        counters=AggregateCounters.model_validate(row),
    )


async def set_total(conn: AsyncConnection[Any], job_id: int, total: int) -> None:
    """Collect's count; the outcome counters restart with the image set."""
    await conn.execute(
        "UPDATE job_runs SET total = %s, processed = 0, failed = 0, detections = 0,"
        " classifications = 0, collected_at = now(), updated_at = now() WHERE job_id = %s",
        (total, job_id),
    )


async def add(
    conn: AsyncConnection[Any],
    job_id: int,
    *,
    processed: int = 0,
    failed: int = 0,
    detections: int = 0,
    classifications: int = 0,
) -> AggregateCounters | None:
    """Add outcomes (in the caller's transaction); the counters after it."""
    cur = await conn.execute(
        "UPDATE job_runs SET processed = processed + %s, failed = failed + %s,"
        " detections = detections + %s, classifications = classifications + %s,"
        " updated_at = now() WHERE job_id = %s"
        " RETURNING total, processed, failed, detections, classifications",
        (processed, failed, detections, classifications, job_id),
    )
    row = await cur.fetchone()
    return AggregateCounters.model_validate(row) if row else None


async def remove(conn: AsyncConnection[Any], job_id: int) -> None:
    await conn.execute("DELETE FROM job_runs WHERE job_id = %s", (job_id,))


async def collected(conn: AsyncConnection[Any], job_id: int, run_id: str) -> int | None:
    """The image count collect committed for this run, or None if it has not yet."""
    cur = await conn.execute(
        "SELECT total FROM job_runs WHERE job_id = %s AND run_id = %s AND collected_at IS NOT NULL",
        (job_id, run_id),
    )
    row = await cur.fetchone()
    return int(row["total"]) if row else None


async def set_paused(
    conn: AsyncConnection[Any],
    job_id: int,
    paused: bool,
    run_id: str | None = None,
    request: int | None = None,
) -> bool:
    """Pause or resume the job's current run (``run_id``: only if it is that run; ``request``:
    only if no pause or resume request newer than that one was made); True if that changed
    anything (so a repeated pause or resume writes nothing and logs nothing)."""
    cur = await conn.execute(
        "UPDATE job_runs SET paused_at = CASE WHEN %(paused)s THEN now() END"
        " WHERE job_id = %(job)s AND (%(run)s::text IS NULL OR run_id = %(run)s::text)"
        " AND (%(request)s::bigint IS NULL OR pause_requests <= %(request)s::bigint)"
        " AND (paused_at IS NOT NULL) <> %(paused)s",
        {"paused": paused, "job": job_id, "run": run_id, "request": request},
    )
    return cur.rowcount == 1


async def count_pause_request(conn: AsyncConnection[Any], job_id: int) -> int | None:
    """A pause or resume request for the job's current run: its number (None: no run yet)."""
    cur = await conn.execute(
        "UPDATE job_runs SET pause_requests = pause_requests + 1 WHERE job_id = %s"
        " RETURNING pause_requests",
        (job_id,),
    )
    row = await cur.fetchone()
    return int(row["pause_requests"]) if row else None


async def paused_since(conn: AsyncConnection[Any], job_id: int) -> datetime | None:
    cur = await conn.execute("SELECT paused_at FROM job_runs WHERE job_id = %s", (job_id,))
    row = await cur.fetchone()
    return row["paused_at"] if row else None


async def set_schema_error(conn: AsyncConnection[Any], job_id: int, error: str | None) -> None:
    """What keeps the run's saves waiting for Antenna's schema (None: saving again); the time
    it began is kept while the error stays."""
    await conn.execute(
        "UPDATE job_runs SET schema_error = %(error)s::text, schema_error_since = CASE"
        " WHEN %(error)s::text IS NULL THEN NULL ELSE coalesce(schema_error_since, now()) END"
        " WHERE job_id = %(job)s",
        {"error": error, "job": job_id},
    )
