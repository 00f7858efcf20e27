"""Job actions (create, run, cancel, retry, pause, resume, view), shared by the HTTP API, the
CLI, the bridge and the benchmarks.

The database is written first (CANCELING, RETRY, paused) so the UI and ``/tasks/`` react at once;
then Temporal is asked to start, cancel or signal the job's workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from antenna_db import job_store
from antenna_db.job_store import JobRecord
from antenna_db.job_summary import JobSummary, job_summary
from core import naming, search_attributes, tracing
from core.bridge_outcome import BridgeOutcome
from core.errors import InvalidJobInput, InvalidJobState, JobNotFound
from core.job_requests import NewInternalJob, NewMlJob
from core.progress import reset_progress
from core.settings import Settings
from core.states import (
    ACTIVE_STATES,
    CANCELABLE_STATES,
    FINAL_STATES,
    RETRYABLE_STATES,
    DispatchMode,
    JobState,
    JobType,
)
from core.workflow_io import JobWorkflowInput
from storage import job_images
from storage.pool import Pool


class JobView(BaseModel):
    """A job with its latest log lines, as shown by ``GET /jobs/{id}`` and ``job status``."""

    job: JobRecord
    logs: list[dict[str, Any]]


class JobActions:
    def __init__(self, pool: Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings
        self._names = settings.jobs.names

    def _handle(self, job_id: int) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(self._names.workflow_id(job_id))

    async def create(self, new: NewMlJob, *, start: bool = False) -> JobRecord:
        async with self._pool.connection() as conn:
            job = await job_store.create_ml_job(conn, new)
        return await self.run(job.id) if start else job

    async def create_internal(self, new: NewInternalJob, *, start: bool = False) -> JobRecord:
        """A populate_captures_collection or data_export job (params checked per type)."""
        async with self._pool.connection() as conn:
            job = await job_store.create_internal_job(conn, new)
        return await self.run(job.id) if start else job

    async def run(self, job_id: int) -> JobRecord:
        """Start the job's workflow; a job already running keeps its one run."""
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            if job.status in FINAL_STATES or job.status == JobState.CANCELING:
                raise InvalidJobState(job_id, job.status, "run")
            _check_type(job, self._settings.antenna.runs_antenna_tasks)
            # Antenna's Job.enqueue: PENDING with a new task id, scheduled now.
            await job_store.transition(
                conn, job_id, JobState.PENDING, [JobState.CREATED], enqueued=True
            )
        await self._start_workflow(job)
        async with self._pool.connection() as conn:
            return await job_store.get_job(conn, job_id)

    async def retry(self, job_id: int, *, failed_only: bool = False) -> JobRecord:
        """A new run of a FAILURE or REVOKED job under the same workflow id, written as Antenna's
        Job.retry (progress reset, RETRY) and then its enqueue (PENDING, new task id) do.
        ``failed_only``: the new run queues only the images that failed in the previous one."""
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            if job.status not in RETRYABLE_STATES:
                raise InvalidJobState(job_id, job.status, "retry")
            _check_type(job, self._settings.antenna.runs_antenna_tasks)
            if failed_only:
                if job.job_type != JobType.ML:
                    raise InvalidJobInput("failed_only", "only ML jobs have failed images")
                failed = await job_images.failed_count(conn, job_id)
                if failed == 0:
                    raise InvalidJobInput(
                        "failed_only", f"job {job_id}'s last run has no failed images to retry"
                    )
            moved = await job_store.transition(
                conn,
                job_id,
                JobState.PENDING,
                RETRYABLE_STATES,
                enqueued=True,
                progress=reset_progress(job.progress),
            )
            if not moved:
                raise InvalidJobState(job_id, (await job_store.get_status(conn, job_id)), "retry")
            await job_store.append_log(
                conn,
                job_id,
                f"Retry requested: only the {failed} images that failed"
                if failed_only
                else "Retry requested",
                context={"failed_only": failed_only},
            )
            last_run = (await job_store.run_state(conn, job_id)).run_id
        handle = await self._start_workflow(job, failed_only=failed_only)
        if _joined(handle, last_run):
            # The last run wrote its final status and is still cleaning up.
            await self._start_after_close(handle, job, failed_only=failed_only)
        async with self._pool.connection() as conn:
            return await job_store.get_job(conn, job_id)

    async def cancel(self, job_id: int, reason: str = "cancelled by user") -> JobRecord:
        """CANCELING now, then cancel the workflow; a job with no workflow is REVOKED here."""
        async with self._pool.connection() as conn:
            moved = await job_store.transition(conn, job_id, JobState.CANCELING, CANCELABLE_STATES)
            if not moved:
                raise InvalidJobState(job_id, (await job_store.get_status(conn, job_id)), "cancel")
            await job_store.append_log(conn, job_id, f"Cancel requested: {reason}")
        try:
            await self._handle(job_id).cancel(reason=reason)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Never started (CREATED): nothing runs, so nothing has to stop first.
            async with self._pool.connection() as conn:
                await job_store.transition(
                    conn, job_id, JobState.REVOKED, [JobState.CANCELING], finished=True
                )
                await job_store.append_log(conn, job_id, "Revoked before its workflow started")
        async with self._pool.connection() as conn:
            return await job_store.get_job(conn, job_id)

    async def pause(self, job_id: int, reason: str = "paused by user") -> JobRecord:
        """No more tasks for the job's run until resumed; results in flight are still saved."""
        return await self._set_paused(job_id, True, reason)

    async def resume(self, job_id: int, reason: str = "resumed by user") -> JobRecord:
        """Hand out the paused job's tasks again, where it stopped."""
        return await self._set_paused(job_id, False, reason)

    async def _set_paused(self, job_id: int, paused: bool, reason: str) -> JobRecord:
        action = "pause" if paused else "resume"
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            if job.job_type != JobType.ML or job.dispatch_mode != DispatchMode.ASYNC_API:
                raise InvalidJobState(job_id, f"a {job.job_type}/{job.dispatch_mode} job", action)
            if job.status not in ACTIVE_STATES:
                raise InvalidJobState(job_id, job.status, action)
            request = await job_store.request_pause(conn, job_id, paused, reason)
        try:
            signal = naming.PAUSE_SIGNAL if paused else naming.RESUME_SIGNAL
            await self._handle(job_id).signal(signal, args=[reason, request])
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # No run to tell (terminated): the database is what /tasks/ reads.
        async with self._pool.connection() as conn:
            return await job_store.get_job(conn, job_id)

    async def start_for_antenna(
        self, job_id: int, task_id: str | None = None, *, started_by: str = "bridge"
    ) -> BridgeOutcome:
        """Antenna's run_job message: start (or join) the job's workflow.

        Antenna already wrote PENDING (and a fresh task id), so the status is left as it is; the
        workflow's start activity moves it on. A final job is a stale message: nothing starts.
        ``started_by="reconcile"``: the message never reached the bridge in time, reconcile
        starts the run (and the message, when it comes, joins it).
        """
        async with self._pool.connection() as conn:
            try:
                job = await job_store.get_job(conn, job_id)
            except JobNotFound:
                return BridgeOutcome.MISSING
        if job.status in FINAL_STATES:
            return BridgeOutcome.FINAL
        if job.status == JobState.CANCELING:
            return BridgeOutcome.CANCELING
        running = await self._running_run_id(job_id)
        handle = await self._start_workflow(job)
        if _joined(handle, running):
            async with self._pool.connection() as conn:
                state = await job_store.run_state(conn, job_id)
            if not (state.status == JobState.PENDING and state.run_id == running):
                return BridgeOutcome.ALREADY_RUNNING
            # The running run took the job before and Antenna has since set it PENDING again
            # (its Retry): that run wrote its final status and is only cleaning up.
            handle = await self._start_after_close(handle, job)
        line = (
            f"Run started from Antenna's run_job message (task {task_id})"
            if started_by == "bridge"
            else "Run started by reconcile: the job was PENDING with no run (its run_job"
            f" message had not reached the bridge; task {job.task_id})"
        )
        async with self._pool.connection() as conn:
            await job_store.append_log(
                conn,
                job_id,
                line,
                context={
                    "celery_task_id": task_id or job.task_id,
                    "workflow_run_id": handle.result_run_id,
                    "started_by": started_by,
                },
            )
        return BridgeOutcome.STARTED

    async def _running_run_id(self, job_id: int) -> str | None:
        try:
            desc = await self._handle(job_id).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return None
        return desc.run_id if desc.status == WorkflowExecutionStatus.RUNNING else None

    async def view(self, job_id: int, log_lines: int | None = None) -> JobView:
        async with self._pool.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            logs = await job_store.latest_logs(
                conn, job_id, log_lines or self._settings.api.log_lines
            )
        return JobView(job=job, logs=logs)

    async def _start_after_close(
        self, joined: WorkflowHandle[Any, Any], job: JobRecord, *, failed_only: bool = False
    ) -> WorkflowHandle[Any, Any]:
        """The start joined a run that has written its final status and is only cleaning up
        (its stream, its Redis keys), and the job would sit PENDING: let that run end, then
        start the new run."""
        await self._wait_closed(joined)
        return await self._start_workflow(job, failed_only=failed_only)

    async def _wait_closed(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Until the run ``handle`` names has closed, however it ends (or the short activity
        timeout passes: a run stuck that long is the reconciler's to find)."""
        timeout = self._settings.jobs.short_activity_timeout.total_seconds()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), timeout)

    async def _start_workflow(
        self, job: JobRecord, *, failed_only: bool = False
    ) -> WorkflowHandle[Any, Any]:
        """Start (or join) the job's workflow, with the search attributes operators filter on
        and the summary and details the Web UI shows."""
        _check_type(job, self._settings.antenna.runs_antenna_tasks)
        async with self._pool.connection() as conn:
            shown = await job_summary(conn, job)
        # The root of the run's trace (or a child of the bridge's message span): the SDK's
        # interceptor carries it into the workflow (core/tracing.py).
        attributes = {
            **tracing.job_attributes(job.id, job.project_id, shown.pipeline_slug, job.pipeline_id),
            "antenna_jobs.job_type": job.job_type.value,
            "antenna_jobs.failed_only": failed_only,
        }
        with tracing.span("antenna_jobs.job.start", attributes):
            return await self._start_workflow_traced(job, shown, failed_only)

    async def _start_workflow_traced(
        self, job: JobRecord, shown: JobSummary, failed_only: bool
    ) -> WorkflowHandle[Any, Any]:
        return await self._client.start_workflow(
            naming.workflow_type(
                job.job_type,
                job.dispatch_mode,
                antenna_tasks=self._settings.antenna.runs_antenna_tasks,
            ),
            JobWorkflowInput(job_id=job.id, failed_only=failed_only),
            id=self._names.workflow_id(job.id),
            task_queue=self._settings.jobs.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.JOB_ID, job.id),
                    SearchAttributePair(search_attributes.PROJECT_ID, job.project_id),
                    SearchAttributePair(search_attributes.JOB_STATUS, JobState.PENDING.value),
                    SearchAttributePair(search_attributes.PIPELINE_SLUG, shown.pipeline_slug or ""),
                    SearchAttributePair(search_attributes.JOB_TYPE, job.job_type.value),
                ]
            ),
            static_summary=shown.summary(job),
            static_details=shown.details(job),
        )


def _check_type(job: JobRecord, antenna_tasks: bool) -> None:
    """A type Antenna added after this code: in Antenna mode its own code runs it
    (AntennaTaskWorkflow); standalone no workflow here can. The API answers 400, the bridge
    dead-letters the Run, reconcile fails the job, each with this message."""
    if not job.job_type.known and not antenna_tasks:
        raise InvalidJobInput(
            "job_type", f"job {job.id}'s type {job.job_type.value!r} is not one antenna-jobs runs"
        )


def _joined(handle: WorkflowHandle[Any, Any], run_id: str | None) -> bool:
    """Whether a start joined the run ``run_id`` (a start while a run of the id is open does)."""
    return run_id is not None and handle.result_run_id == run_id
