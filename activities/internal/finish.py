"""Ending an INTERNAL job: guarded SUCCESS, its stages closed and its result saved, together.

ML jobs end through finalize_job (activities/jobs.py), which decides SUCCESS or FAILURE from
image counts; an internal job's work either finished (this) or raised (fail_job, revoke_job).
"""

from __future__ import annotations

from temporalio import activity

from activities.internal.models import FinishInput
from activities.models import FinalizeResult
from antenna_db import job_store
from core.states import FINALIZABLE_STATES, JobState
from storage.pool import Pool


class InternalJobActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name="finish_internal_job")
    async def finish_internal_job(self, inp: FinishInput) -> FinalizeResult:
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, inp.job_id)
            if job.status == JobState.SUCCESS:
                # A retried attempt whose first try committed (status, result and log at once).
                return FinalizeResult(status=JobState.SUCCESS, moved=True)
            progress = job.progress.model_copy(deep=True)
            for stage in progress.stages:
                progress.update_stage(stage.key, status=JobState.SUCCESS, progress=1.0)
            async with conn.transaction():
                moved = await job_store.transition(
                    conn,
                    job.id,
                    JobState.SUCCESS,
                    FINALIZABLE_STATES,
                    finished=True,
                    progress=progress,
                )
                if moved:
                    await job_store.save_result(conn, job.id, inp.result)
                    await job_store.append_log(
                        conn, job.id, f"Job finished: SUCCESS. {inp.summary}", context=inp.result
                    )
            if not moved:
                return FinalizeResult(status=await job_store.get_status(conn, job.id), moved=False)
        return FinalizeResult(status=JobState.SUCCESS, moved=True)
