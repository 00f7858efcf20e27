"""Collect: materialise a job's image set in Postgres (job_images) with one set-based statement.

The collection's images, minus those the job's pipeline already processed (an image counts as
processed when it has a detection, null-bbox marker included, from one of the pipeline's
algorithms; skipped when the project reprocesses everything), shuffled if the job says so and
limited to job.limit. A retried attempt or a retry run replaces the previous image set in the
same transaction, so collect is idempotent.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from activities.heartbeat import heartbeating
from activities.models import CollectResult, JobRef
from core import job_store
from core.progress import JobProgress
from core.settings import Settings
from core.states import JobState

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# Ordinals are 1..n in publish order; a NULL sort key (no shuffle) falls back to the image id.
_MATERIALISE = """
WITH candidates AS (
    SELECT ci.source_image_id AS id,
           row_number() OVER (
               ORDER BY CASE WHEN %(shuffle)s THEN random() END, ci.source_image_id
           ) AS ordinal,
           count(*) OVER () AS n
    FROM collection_images ci
    WHERE ci.collection_id = %(collection_id)s
      AND (%(reprocess_all)s OR NOT EXISTS (
            SELECT 1 FROM detections d
            WHERE d.source_image_id = ci.source_image_id
              AND d.algorithm_id = ANY(%(algorithm_ids)s::bigint[])))
), inserted AS (
    INSERT INTO job_images (job_id, ordinal, source_image_id)
    SELECT %(job_id)s, ordinal, id FROM candidates
    WHERE %(limit)s::integer IS NULL OR ordinal <= %(limit)s::integer
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS total,
       coalesce((SELECT max(n) FROM candidates), 0) AS candidates,
       (SELECT count(*) FROM collection_images WHERE collection_id = %(collection_id)s)
           AS collection_size
"""

_JOB_CONTEXT = """
SELECT p.reprocess_all_images,
       coalesce(array_agg(pa.algorithm_id) FILTER (WHERE pa.algorithm_id IS NOT NULL), '{}')
           AS algorithm_ids
FROM jobs j
JOIN projects p ON p.id = j.project_id
LEFT JOIN pipeline_algorithms pa ON pa.pipeline_id = j.pipeline_id
WHERE j.id = %s
GROUP BY p.reprocess_all_images
"""


def collected_progress(
    progress: JobProgress, total: int, candidates: int, limit: int | None
) -> JobProgress:
    """The collect stage after materialising: SUCCESS with total_images (and limit if trimmed)."""
    updated = progress.model_copy(deep=True)
    params: dict[str, int] = {"total_images": total}
    if limit is not None and candidates > total:
        params["limit"] = limit
    updated.update_stage("collect", status=JobState.SUCCESS, progress=1.0, **params)
    return updated


class ImageActivities:
    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    @activity.defn(name="collect_images")
    async def collect_images(self, ref: JobRef) -> CollectResult:
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, ref.job_id)
            progress = job.progress.model_copy(deep=True)
            if progress.stages:
                progress.update_stage("collect", status=JobState.STARTED, progress=0.0)
                await job_store.save_progress(conn, job.id, progress)
            cur = await conn.execute(_JOB_CONTEXT, (job.id,))
            context = await cur.fetchone()
            assert context is not None
            params = {
                "job_id": job.id,
                "collection_id": job.collection_id,
                "shuffle": job.shuffle,
                "limit": job.limit,
                "reprocess_all": context["reprocess_all_images"],
                "algorithm_ids": context["algorithm_ids"],
            }
            # A cancel arrives on a heartbeat; psycopg then cancels the statement on the server
            # (its async wait sends a cancel request when the awaiting task is cancelled).
            async with heartbeating(self._settings.jobs.heartbeat_interval), conn.transaction():
                await conn.execute("DELETE FROM job_images WHERE job_id = %s", (job.id,))
                cur = await conn.execute(_MATERIALISE, params)
                row = await cur.fetchone()
            assert row is not None
            total, candidates = int(row["total"]), int(row["candidates"])
            if progress.stages:
                progress = collected_progress(progress, total, candidates, job.limit)
                await job_store.save_progress(conn, job.id, progress)
            skipped = int(row["collection_size"]) - candidates
            trimmed = ""
            if candidates > total:
                trimmed = f", limit {job.limit} trimmed {candidates - total}"
            await job_store.append_log(
                conn,
                job.id,
                f"Collected {total} images from collection {job.collection_id}"
                f" ({skipped} already processed by this pipeline skipped{trimmed})",
                context={"total": total, "candidates": candidates, "skipped": skipped},
            )
        return CollectResult(total=total, candidates=candidates)
