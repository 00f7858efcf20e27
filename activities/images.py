"""Collect: materialise a job's image set in Postgres (job_images) with one set-based statement
(antenna_db/captures.py: the job's captures minus what Antenna's filter_processed_images skips,
shuffled, limited). A retried attempt or a retry run replaces the previous image set in the
same transaction, so collect is idempotent.
"""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.heartbeat import run_id as activity_run_id
from activities.jobs import PoolActivities
from activities.models import CollectInput, CollectResult
from antenna_db import captures, job_store, pipelines
from core.errors import Failure, failure
from core.progress import JobProgress
from core.states import JobState
from storage import job_runs


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


class ImageActivities(PoolActivities):
    @activity.defn(name="collect_images")
    async def collect_images(self, ref: CollectInput) -> CollectResult:
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, ref.job_id)
            if ref.failed_only:
                # This run's failed-only set may already be in place (an attempt that committed
                # and was retried): the previous run's failures are gone from it by now.
                done = await job_runs.collected(conn, job.id, activity_run_id())
                if done is not None:
                    return CollectResult(total=done, candidates=done)
            pipeline = await pipelines.load(conn, job.id)
            if len(pipeline.detectors) != 1:
                found = ", ".join(a.key for a in pipeline.detectors) or "none"
                raise failure(
                    Failure.PIPELINE_NOT_CONFIGURED,
                    f"pipeline {pipeline.slug!r} must have exactly one detection algorithm"
                    f" (has {found}): its null markers and crops need it, as in Antenna",
                )
            progress = job.progress.model_copy(deep=True)
            if progress.stages:
                progress.update_stage("collect", status=JobState.STARTED, progress=0.0)
                await job_store.save_progress(conn, job.id, progress)
            # A cancel arrives on a heartbeat; psycopg then cancels the statement on the server
            # (its async wait sends a cancel request when the awaiting task is cancelled).
            async with heartbeating(self._settings.jobs.heartbeat_interval), conn.transaction():
                collected = await (
                    captures.materialise_failed(conn, job)
                    if ref.failed_only
                    else captures.materialise(conn, job)
                )
                await job_runs.set_total(conn, job.id, collected.total)
            # Statistics that know this job's rows: planned with stale ones (autovacuum comes
            # later), each publish page of a 450k-image job sorted every row left after it.
            await captures.analyse_job_images(conn)
            total, candidates = collected.total, collected.candidates
            if progress.stages:
                progress = collected_progress(progress, total, candidates, job.limit)
                await job_store.save_progress(conn, job.id, progress)
            skipped = collected.source_size - candidates
            trimmed = ""
            if candidates > total:
                trimmed = f", limit {job.limit} trimmed {candidates - total}"
            if ref.failed_only:
                line = (
                    f"Collected {total} images: {collected.source} of {collected.source_size}"
                    " (failed-only retry)"
                )
            else:
                line = (
                    f"Collected {total} images from {collected.source}"
                    f" ({skipped} already processed by this pipeline skipped{trimmed})"
                )
            await job_store.append_log(
                conn,
                job.id,
                line,
                context={
                    "total": total,
                    "candidates": candidates,
                    "skipped": skipped,
                    "failed_only": ref.failed_only,
                },
            )
        return CollectResult(total=total, candidates=candidates)
