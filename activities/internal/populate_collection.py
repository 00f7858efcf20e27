"""populate_captures_collection: fill a collection from its project's captures by a sampling
method (core/job_params.py), with set-based SQL.

The collection's membership is replaced in ONE transaction (method recorded, old members
removed, the sample inserted), so a retried attempt gives the same collection and a cancel
(psycopg cancels the running statement when the activity task is cancelled) leaves it as it
was. ``random`` orders by a hash of (seed, image id): the same seed picks the same sample, so a
retry does too; the seed defaults to the job id.
"""

from __future__ import annotations

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.internal.models import InternalResult
from activities.jobs import PoolActivities
from activities.models import JobRef
from antenna_db import cachalot, collections, job_store
from core.errors import Failure, failure
from core.job_params import populate_params
from core.states import JobState

STAGE = "populate_captures_collection"


def _refused(message: str) -> ApplicationError:
    """What no retry can fix fails the job with the reason."""
    return failure(Failure.POPULATE_FAILED, message)


class PopulateActivities(PoolActivities):
    @activity.defn(name="populate_collection")
    async def populate_collection(self, ref: JobRef) -> InternalResult:
        # Every statement heartbeats, the progress writes too: one waiting for the job's row past
        # the heartbeat timeout would have the attempt taken for lost and run again beside it.
        async with (
            heartbeating(self._settings.jobs.heartbeat_interval),
            self._pool.connection() as conn,
        ):
            job = await job_store.get_job(conn, ref.job_id)
            if job.collection_id is None:
                raise _refused("the job names no capture set to populate")
            # A job Antenna created names only the capture set: its sampling is on the set.
            raw = job.params or await collections.sampling(conn, job.collection_id) or {}
            try:
                params = populate_params(raw)
            except ValidationError as err:
                raise _refused(
                    f"capture set {job.collection_id}: sampling {raw} is not one antenna-jobs"
                    f" runs: {err.errors()[:1]}"
                ) from err
            progress = job.progress.model_copy(deep=True)
            if progress.stages:
                progress.update_stage(
                    STAGE, status=JobState.STARTED, progress=0.1, method=params.method.value
                )
                await job_store.save_progress(conn, job.id, progress)
            async with conn.transaction():
                done = await collections.populate(
                    conn,
                    collection_id=job.collection_id,
                    project_id=job.project_id,
                    params=params,
                    seed=job.id,
                )
            cachalot.wrote(*collections.POPULATE_TABLES)
            if done is None:
                raise _refused(
                    f"collection {job.collection_id} of project {job.project_id} is gone"
                )
            added, considered = done
            if progress.stages:
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
