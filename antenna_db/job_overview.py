"""Jobs at a glance (job_control/overview.py): how many of each status, each running job with its
current run's counters, its unsaved results and what keeps its saves waiting, and when workers
last polled each pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from core.states import JobState
from storage.pipeline_polls import PipelinePoll

_RUNNING = """
SELECT j.id, j.name, j.project_id, j.status, j.job_type_key AS job_type, j.dispatch_mode,
       j.pipeline_id, m.slug AS pipeline_slug, r.consumer,
       coalesce(r.total, 0) AS total, coalesce(r.processed, 0) AS processed,
       coalesce(r.failed, 0) AS failed,
       extract(epoch FROM now() - coalesce(r.started_at, j.started_at))::float8 AS elapsed,
       (SELECT count(*) FROM result_inbox i WHERE i.job_id = j.id)::int AS inbox,
       r.schema_error,
       extract(epoch FROM now() - r.schema_error_since)::float8 AS schema_error_age
FROM jobs_job j
     LEFT JOIN job_runs r ON r.job_id = j.id
     LEFT JOIN ml_pipeline m ON m.id = j.pipeline_id
WHERE j.status = ANY(%s)
ORDER BY j.id
LIMIT %s"""


async def by_status(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Jobs of each status present."""
    cur = await conn.execute("SELECT status, count(*)::int AS n FROM jobs_job GROUP BY status")
    return {str(r["status"]): int(r["n"]) for r in await cur.fetchall()}


async def running(
    conn: AsyncConnection[Any], states: Iterable[JobState], limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` jobs in ``states``, oldest first: the job's columns, its current run's
    consumer and counters (zero before any run), seconds since the run started (the job's own
    start before any run), its result rows not yet saved, and its run's schema error and age."""
    cur = await conn.execute(_RUNNING, ([s.value for s in states], limit))
    return list(await cur.fetchall())


async def pipeline_polls(conn: AsyncConnection[Any]) -> list[PipelinePoll]:
    """Every pipeline's last poll, newest first, with its slug (None if the pipeline is gone)."""
    cur = await conn.execute(
        "SELECT p.pipeline_id, m.slug, p.polled_at,"
        " extract(epoch FROM now() - p.polled_at)::float8 AS age"
        " FROM pipeline_polls p LEFT JOIN ml_pipeline m ON m.id = p.pipeline_id"
        " ORDER BY p.polled_at DESC"
    )
    return [PipelinePoll.model_validate(row) for row in await cur.fetchall()]
