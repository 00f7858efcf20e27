"""Job row activities: start, cancel checks, finalize, fail, revoke, with the job log lines.

Every status write is guarded (antenna_db.job_store.transition), so a retried attempt or a late
writer can never move a job out of a final state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from psycopg import AsyncConnection
from temporalio import activity

from activities.heartbeat import run_id
from activities.models import (
    CancelCheck,
    FailInput,
    FinalizeInput,
    FinalizeResult,
    JobRef,
    PauseInput,
    RevokeInput,
    StartInput,
    StartOutcome,
    StartResult,
)
from antenna_db import job_store
from core import naming, tracing
from core.errors import Failure, JobNotFound, failure
from core.ml_progress import apply_counters
from core.settings import Settings
from core.states import (
    ACTIVE_STATES,
    CANCEL_STATES,
    CANCELABLE_STATES,
    FINAL_STATES,
    FINALIZABLE_STATES,
    REVOCABLE_STATES,
    RUN_JOB_TYPES,
    STARTABLE_STATES,
    DispatchMode,
    JobState,
    JobType,
)
from storage import job_runs
from storage.pool import Pool

T = TypeVar("T")


async def found(lookup: Awaitable[T]) -> T:
    """The job row ``lookup`` reads; a job that is gone is a non-retryable JOB_NOT_FOUND."""
    try:
        return await lookup
    except JobNotFound as err:
        raise failure(Failure.JOB_NOT_FOUND, str(err)) from err


def check_workflow(
    workflow: str,
    job_id: int,
    job_type: JobType,
    type_key: str,
    mode: DispatchMode,
    *,
    antenna_tasks: bool,
) -> None:
    """A job is run by the workflow naming.workflow_type names for it (its row's ``type_key``
    in the message); any other that is asked to is refused, non-retryable."""
    runs_it = naming.workflow_type(job_type, mode, antenna_tasks=antenna_tasks)
    if runs_it != workflow:
        raise failure(
            Failure.UNSUPPORTED_JOB,
            f"job {job_id} is {type_key}/{mode}: {workflow} does not run it ({runs_it} does)",
        )


R = TypeVar("R", bound=StartResult)


def not_started(result: R) -> R | None:
    """The answer for a job that is not to start (over already: FINAL; being cancelled:
    CANCELING), with ``result``'s status; None for one that may."""
    if result.status in FINAL_STATES:
        return result.model_copy(update={"outcome": StartOutcome.FINAL})
    if result.status in CANCEL_STATES:
        return result.model_copy(update={"outcome": StartOutcome.CANCELING})
    return None


class RowCancelCheck:
    """At most once per ``every``: a job cancelled in the database (e.g. by the Antenna UI)
    stops the activity that calls this, with a non-retryable JobCancelled."""

    def __init__(self, pool: Pool, job_id: int, every: timedelta, *, first_now: bool) -> None:
        self._pool = pool
        self._job_id = job_id
        self._every = every.total_seconds()
        self._last = 0.0 if first_now else time.monotonic()

    async def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        async with self._pool.connection() as conn:
            status = await job_store.get_status(conn, self._job_id)
        if status in CANCEL_STATES:
            raise failure(Failure.JOB_CANCELLED, f"job {self._job_id} is {status}")


class PoolActivities:
    """Activities that work on the database through ``pool``, with the worker's settings."""

    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    @property
    def _names(self) -> naming.Names:
        """This deployment's names of streams, consumers, keys and workflows."""
        return self._settings.jobs.names


class JobActivities(PoolActivities):
    @activity.defn(name="start_job")
    async def start_job(self, ref: StartInput) -> StartResult:
        """Guarded move to STARTED; tells the workflow whether to run, stop, or clean up."""
        async with self._pool.connection() as conn:
            job = await found(job_store.get_job(conn, ref.job_id))
            result = StartResult.started(
                job.status,
                job.project_id,
                self._settings.jobs,
                # A type Antenna added after this code travels as UNKNOWN (its real key stays in
                # the row): the workflow decodes its StartResult whatever the row holds.
                job.job_type if job.job_type.known else JobType.UNKNOWN,
            )
            if (stop := not_started(result)) is not None:
                return stop
            if job.job_type not in RUN_JOB_TYPES and not self._settings.antenna.runs_antenna_tasks:
                raise failure(
                    Failure.UNSUPPORTED_JOB,
                    f"job {job.id} is a {job.job_type} job: only Antenna's own code runs it (set"
                    " ANTENNA_JOBS_ANTENNA_BROKER_URL: Antenna mode sends it to its Celery worker)",
                )
            check_workflow(
                ref.workflow,
                job.id,
                job.job_type,
                job.job_type,
                job.dispatch_mode,
                antenna_tasks=self._settings.antenna.runs_antenna_tasks,
            )
            info = activity.info()
            consumer = self._settings.jobs.names.consumer(job.id)
            async with conn.transaction():
                await job_runs.take(
                    conn, job.id, run_id(), consumer, trace_context=tracing.current_context()
                )
                moved = await job_store.transition(
                    conn, job.id, JobState.STARTED, STARTABLE_STATES, started=True
                )
            if not moved:
                status = await job_store.get_status(conn, job.id)
                if (stop := not_started(result.model_copy(update={"status": status}))) is not None:
                    return stop
                # STARTED already: a retried attempt of this activity, or a new run after the
                # previous one was terminated. Either way the job resumes from collect.
            await job_store.append_log(
                conn,
                job.id,
                f"Job started (workflow {info.workflow_id}, run {info.workflow_run_id})",
                context={"from_status": job.status.value},
            )
            return result.model_copy(update={"status": JobState.STARTED})

    @activity.defn(name="check_cancel")
    async def check_cancel(self, ref: JobRef) -> CancelCheck:
        """A job cancelled in the database only (e.g. by the Antenna UI) stops too."""
        async with self._pool.connection() as conn:
            status = await job_store.get_status(conn, ref.job_id)
        return CancelCheck(status=status, cancelling=status in CANCEL_STATES)

    @activity.defn(name="set_paused")
    async def set_paused(self, inp: PauseInput) -> bool:
        """The pause / resume signal: this run paused or resumed (a job no longer running is not
        paused); whether the run is paused now. The API writes the same before it signals, so
        then this finds nothing to do."""
        async with self._pool.connection() as conn:
            if not inp.paused or await job_store.get_status(conn, inp.job_id) in ACTIVE_STATES:
                await job_store.pause_run(
                    conn, inp.job_id, inp.paused, inp.reason, run_id=run_id(), request=inp.request
                )
            run = await job_runs.get(conn, inp.job_id)
            if run is None or run.run_id != run_id():
                return False
            return await job_runs.paused_since(conn, inp.job_id) is not None

    @activity.defn(name="mark_canceling")
    async def mark_canceling(self, ref: JobRef) -> None:
        """CANCELING first, so /tasks/ stops serving while the running activities wind down."""
        async with self._pool.connection() as conn:
            if await job_store.transition(conn, ref.job_id, JobState.CANCELING, CANCELABLE_STATES):
                await job_store.append_log(conn, ref.job_id, "Cancel requested through Temporal")

    @activity.defn(name="finalize_job")
    async def finalize_job(self, inp: FinalizeInput) -> FinalizeResult:
        """Guarded SUCCESS, or FAILURE past the failure threshold; closes the progress stages."""
        counters = inp.counters
        threshold = self._settings.jobs.failure_threshold
        status = counters.final_status(threshold)
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, inp.job_id)
            if job.status == status:
                # A retried attempt whose first try already committed.
                return FinalizeResult(status=status, moved=True)
            progress = apply_counters(job.progress, counters, status)
            progress.clear_run_params()
            moved = await job_store.transition(
                conn, job.id, status, FINALIZABLE_STATES, finished=True, progress=progress
            )
            if not moved:
                return FinalizeResult(status=await _ended(conn, job.id), moved=False)
            summary = counters.model_dump() | {"status": status.value}
            await job_store.save_result(conn, job.id, summary)
            reason = inp.reason or counters.outcome_line(threshold)
            await job_store.append_log(
                conn,
                job.id,
                f"Job finished: {status.value}. {counters.processed} processed, {counters.failed}"
                f" failed of {counters.total}; {counters.detections} detections,"
                f" {counters.classifications} classifications. {reason}",
                level="INFO" if status == JobState.SUCCESS else "ERROR",
                context=summary,
            )
        return FinalizeResult(status=status, moved=True)

    @activity.defn(name="fail_job")
    async def fail_job(self, inp: FailInput) -> FinalizeResult:
        """Guarded FAILURE for a job whose workflow itself failed (not the images)."""
        return await self._end(
            inp.job_id, JobState.FAILURE, FINALIZABLE_STATES, f"Job failed: {inp.reason}", "ERROR"
        )

    @activity.defn(name="revoke_job")
    async def revoke_job(self, inp: RevokeInput) -> FinalizeResult:
        """Guarded REVOKED with finished_at, after the job's queue state has been removed."""
        return await self._end(
            inp.job_id, JobState.REVOKED, REVOCABLE_STATES, f"Job revoked: {inp.reason}", "WARNING"
        )

    async def _end(
        self, job_id: int, to: JobState, from_states: frozenset[JobState], line: str, level: str
    ) -> FinalizeResult:
        """Guarded move to the final ``to`` with finished_at, and its log line if it moved."""
        async with self._pool.connection() as conn:
            moved = await job_store.transition(conn, job_id, to, from_states, finished=True)
            if moved:
                await job_store.append_log(conn, job_id, line, level=level)
            status = await _ended(conn, job_id)
        return FinalizeResult(status=status, moved=moved)


async def _ended(conn: AsyncConnection[Any], job_id: int) -> JobState:
    """The job's status; once it is final (by our write or another's, e.g. Antenna's cancel
    writing REVOKED itself), its progress stops saying it is paused or waiting for workers."""
    status = await job_store.get_status(conn, job_id)
    if status in FINAL_STATES:
        await job_store.clear_run_params(conn, job_id)
    return status
