"""populate_captures_collection: fill a collection from its project's captures by a sampling
method (core/job_params.py), with set-based SQL.

The collection's membership is replaced in ONE transaction (method recorded, old members
removed, the sample inserted), so a retried attempt gives the same collection and a cancel
(psycopg cancels the running statement when the activity task is cancelled) leaves it as it
was. ``random`` orders by a hash of (seed, image id): the same seed picks the same sample, so a
retry does too; the seed defaults to the job id.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.internal_models import InternalResult
from activities.models import JobRef
from core import job_store
from core.job_params import PopulateParams, SampleMethod, populate_params
from core.settings import Settings
from core.states import JobState

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
STAGE = "populate_captures_collection"
POPULATE_FAILED = "PopulateFailed"

# The project's captures inside the optional window (UTC dates inclusive; hours of the day,
# hour_start > hour_end wrapping past midnight).
_WINDOW = """
SELECT si.id, si.timestamp FROM source_images si
WHERE si.project_id = %(project)s
  AND (%(date_start)s::date IS NULL
       OR (si.timestamp AT TIME ZONE 'UTC')::date >= %(date_start)s::date)
  AND (%(date_end)s::date IS NULL
       OR (si.timestamp AT TIME ZONE 'UTC')::date <= %(date_end)s::date)
  AND (%(hour_start)s::int IS NULL OR CASE
        WHEN %(hour_start)s::int <= %(hour_end)s::int
          THEN extract(hour FROM si.timestamp AT TIME ZONE 'UTC')
               BETWEEN %(hour_start)s::int AND %(hour_end)s::int
        ELSE extract(hour FROM si.timestamp AT TIME ZONE 'UTC') >= %(hour_start)s::int
          OR extract(hour FROM si.timestamp AT TIME ZONE 'UTC') <= %(hour_end)s::int
       END)
"""
_SAMPLES: dict[SampleMethod, str] = {
    SampleMethod.ALL: "SELECT id FROM candidates",
    SampleMethod.TIME_WINDOW: "SELECT id FROM candidates",
    SampleMethod.RANDOM: (
        "SELECT id FROM candidates ORDER BY md5(%(seed)s::text || ':' || id), id LIMIT %(size)s"
    ),
    # The first capture in time order, then every Nth after it.
    SampleMethod.EVERY_NTH: (
        "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY timestamp NULLS LAST, id) AS n"
        " FROM candidates) c WHERE (n - 1) %% %(every)s = 0"
    ),
}


def window_params(job: job_store.JobRecord, params: PopulateParams) -> dict[str, Any]:
    return {
        "project": job.project_id,
        "collection": job.collection_id,
        "date_start": params.date_start,
        "date_end": params.date_end,
        "hour_start": params.hour_start,
        "hour_end": params.hour_end,
        "size": params.size,
        "every": params.every,
        "seed": params.seed if params.seed is not None else job.id,
    }


def _refused(message: str) -> ApplicationError:
    """What no retry can fix fails the job with the reason."""
    return ApplicationError(message, type=POPULATE_FAILED, non_retryable=True)


class PopulateActivities:
    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    @activity.defn(name="populate_collection")
    async def populate_collection(self, ref: JobRef) -> InternalResult:
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, ref.job_id)
            try:
                params = populate_params(job.params)
            except ValidationError as err:
                raise _refused(f"invalid params {job.params}: {err.errors()[:1]}") from err
            values = window_params(job, params)
            progress = job.progress.model_copy(deep=True)
            progress.update_stage(
                STAGE, status=JobState.STARTED, progress=0.1, method=params.method.value
            )
            await job_store.save_progress(conn, job.id, progress)
            insert = sql.SQL(
                "WITH candidates AS (" + _WINDOW + "), sample AS (" + _SAMPLES[params.method] + ")"
                ", added AS (INSERT INTO collection_images (collection_id, source_image_id)"
                " SELECT %(collection)s, id FROM sample RETURNING 1)"
                " SELECT (SELECT count(*) FROM added) AS added,"
                " (SELECT count(*) FROM candidates) AS considered"
            )
            async with heartbeating(self._settings.jobs.heartbeat_interval), conn.transaction():
                # Taken first: a second populate of the same collection waits here.
                cur = await conn.execute(
                    "UPDATE collections SET method = %s, params = %s::jsonb"
                    " WHERE id = %s AND project_id = %s",
                    (
                        params.method.value,
                        json.dumps(job.params),
                        job.collection_id,
                        job.project_id,
                    ),
                )
                if cur.rowcount != 1:
                    raise _refused(
                        f"collection {job.collection_id} of project {job.project_id} is gone"
                    )
                await conn.execute(
                    "DELETE FROM collection_images WHERE collection_id = %s", (job.collection_id,)
                )
                cur = await conn.execute(insert, values)
                row = await cur.fetchone()
            assert row is not None
            added, considered = int(row["added"]), int(row["considered"])
            progress.update_stage(
                STAGE, progress=1.0, captures_considered=considered, captures_added=added
            )
            await job_store.save_progress(conn, job.id, progress)
        summary = (
            f"Collection {job.collection_id} now holds {added} captures"
            f" (method {params.method.value}, {considered} captures considered)"
        )
        return InternalResult(
            result={
                "collection_id": job.collection_id,
                "method": params.method.value,
                "captures_considered": considered,
                "captures_added": added,
            },
            summary=summary,
        )
