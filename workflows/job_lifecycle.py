"""What every job workflow shares: start, the cancel paths, failure, revoke and the wind-down.

A job workflow (``job-{id}``, one per job, whatever its type) subclasses JobLifecycle (the ML ones
through MlJobLifecycle, workflows/ml_job.py), fills in
``_work`` (what runs once the job is STARTED) and ``_cleanup`` (what must go whenever the run
ends: streams and keys, a partial export file...), and defines a ``@workflow.run`` that returns
``await self._run_job()``. The SDK requires the run method on the class itself; the ``cancel``
signal, the ``progress`` query and ``@workflow.init`` are inherited.

Every path that stops a job early is a Temporal cancel (``handle.cancel``, the ``cancel`` signal,
a job row saying CANCELING): running activities are cancelled and awaited, cleanup runs, the job
is REVOKED and the run closes as CANCELED. A failure fails the job with the reason and the run
with an ApplicationError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from activities.models import (
        FailInput,
        FinalizeResult,
        JobConfig,
        JobRef,
        RevokeInput,
        SelfCancelInput,
        StartInput,
        StartOutcome,
        StartResult,
    )
    from activities.temporal_ops import TemporalActivities
    from core import naming, search_attributes
    from core.errors import Failure, failure
    from core.states import FINAL_STATES, JobState
    from core.workflow_io import JobWorkflowInput, JobWorkflowResult, WorkflowProgress

STEP_TIMEOUT = timedelta(minutes=2)
PHASE_TIMEOUT = timedelta(days=30)
# Unlimited attempts with backoff: an outage of Postgres/NATS/Redis delays the job, it does not
# fail it; business errors are raised non-retryable by the activities.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60))
WAIT = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


# What the run's own handlers take: its errors and a cancel. Never BaseException: the SDK tears a
# run down with exceptions of its own (eviction), and the garbage collector closes a run it drops
# with GeneratorExit, possibly on a thread that is running another workflow's activation; code
# that caught those would go on to issue commands into that other workflow (a non-determinism
# error there: issue 21). Those pass through untouched, and the SDK finishes the teardown.
_RUN_ENDED = (Exception, asyncio.CancelledError)

# A step or phase is an activity method taking one input: mypy checks each call's argument against
# the activity's input type and gives the call the activity's result type (as the SDK's own
# start_activity_method overloads do; every activity here is an async method with one input).
_Owner = TypeVar("_Owner")
_In = TypeVar("_In")
_Out = TypeVar("_Out")
Activity = Callable[[_Owner, _In], Awaitable[_Out]]


def _error_type(err: BaseException) -> str | None:
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type if isinstance(cause, ApplicationError) else None


class JobLifecycle:
    # The workflow type name; start_job checks that it is the one that runs this job's type.
    workflow_name: ClassVar[str]

    @workflow.init
    def __init__(self, inp: JobWorkflowInput) -> None:
        self._job = JobRef(job_id=inp.job_id)
        self._failed_only = inp.failed_only
        self._state = WorkflowProgress(job_id=inp.job_id)
        self._config: JobConfig | None = None
        self._start: StartResult | None = None
        self._handles: list[workflow.ActivityHandle[Any]] = []
        # Set once the job reached a final state here: a late cancel no longer applies.
        self._finished = False
        # False when start found the job already final: then this run touches nothing.
        self._owns_job = True
        self._cancel_signalled = False

    @workflow.query(name="progress")
    def progress(self) -> WorkflowProgress:
        return self._state

    @workflow.signal(name=naming.CANCEL_SIGNAL)
    async def cancel(self, reason: str | None = None) -> None:
        """Same as a Temporal cancel request: it makes one (see activities/temporal_ops.py)."""
        if self._finished or self._cancel_signalled or workflow.cancellation_reason() is not None:
            return
        self._cancel_signalled = True
        await self._request_cancel(reason or "cancel signal")

    # --- what a job workflow fills in ---------------------------------------------------------

    async def _work(self) -> JobWorkflowResult:
        """The job's own work, once it is STARTED; returns after the job was finalized."""
        raise NotImplementedError

    async def _cleanup(self) -> None:
        """Remove what the job's work may leave behind; runs at the end of every run it owns."""

    # --- the run --------------------------------------------------------------------------------

    async def _run_job(self) -> JobWorkflowResult:
        try:
            try:
                result = await self._begin()
            except _RUN_ENDED as err:
                await self._wind_down_after(err)
                raise
            await self._wind_down()
        except _RUN_ENDED as err:
            await workflow.wait_condition(workflow.all_handlers_finished)
            if workflow.cancellation_reason() is not None and not self._finished:
                await self._revoke()
                if is_cancelled_exception(err):
                    raise
                raise asyncio.CancelledError(workflow.cancellation_reason()) from err
            failure = await self._fail(err)
            if failure is err:
                raise
            raise failure from err
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _wind_down_after(self, err: BaseException) -> None:
        """The work ended early: a cancelled job row becomes a real cancel, then wind down (also
        when that raises)."""
        try:
            if _error_type(err) == Failure.JOB_CANCELLED and workflow.cancellation_reason() is None:
                await self._cancel_self("the job row says it is cancelled")
        except _RUN_ENDED:
            await self._wind_down()
            raise
        await self._wind_down()

    async def _take_job(self) -> StartResult:
        """Take the job (start_job); a workflow whose start differs overrides this."""
        start: StartResult = await self._run_step(
            JobActivities.start_job,
            StartInput(job_id=self._job.job_id, workflow=self.workflow_name),
        )
        return start

    def _status_once_taken(self, start: StartResult) -> JobState:
        """What the job's status is once this run took it (STARTED: start_job wrote it)."""
        return JobState.STARTED

    async def _begin(self) -> JobWorkflowResult:
        start = await self._take_job()
        if start.outcome == StartOutcome.FINAL:
            self._owns_job = False
            self._finished = True
            self._state.status = start.status
            self._set_phase("done")
            return JobWorkflowResult(job_id=self._job.job_id, status=start.status)
        self._start = start
        self._config = start.config
        if start.outcome == StartOutcome.CANCELING:
            await self._cancel_self("the job was cancelled before it started")
        self._set_status(self._status_once_taken(start), project_id=start.project_id)
        return await self._work()

    async def _close(
        self, done: FinalizeResult, result: JobWorkflowResult, reason: str
    ) -> JobWorkflowResult:
        """After the final status write: a job cancelled meanwhile takes the cancel path; a
        FAILURE fails the run (non-retryable, with the result attached)."""
        if not done.moved and done.status not in FINAL_STATES - {JobState.REVOKED}:
            await self._cancel_self(f"the job became {done.status} while finishing")
        self._finished = True
        self._set_status(done.status)
        self._set_phase("done")
        if done.status == JobState.FAILURE:
            raise failure(Failure.JOB_FAILED, f"job {self._job.job_id} failed: {reason}", result)
        return result

    # --- the cancel and failure paths -------------------------------------------------------

    async def _wind_down(self) -> None:
        """Stop what still runs, then clean up (always, also on success)."""
        cancelling = workflow.cancellation_reason() is not None and not self._finished
        if cancelling and self._owns_job:
            self._set_phase("cancelling")
            await self._run_step(JobActivities.mark_canceling, self._job, check=False)
        running = [h for h in self._handles if not h.done()]
        for handle in running:
            handle.cancel()
        # Also the ones that ended meanwhile (e.g. failed on seeing CANCELING): awaiting them
        # marks their outcome seen. Cancelled on purpose: only their end matters, not how.
        for handle in self._handles:
            with contextlib.suppress(*_RUN_ENDED):
                await handle
        if self._owns_job:
            await self._cleanup()

    async def _revoke(self) -> None:
        reason = workflow.cancellation_reason() or "cancelled"
        done: FinalizeResult = await self._run_step(
            JobActivities.revoke_job,
            RevokeInput(job_id=self._job.job_id, reason=reason),
            check=False,
        )
        self._set_status(done.status)
        self._set_phase("cancelled")

    async def _fail(self, err: BaseException) -> BaseException:
        """The job fails with the reason; the run fails with an ApplicationError (never a plain
        exception, which would leave the run retrying its workflow task forever)."""
        if isinstance(err, ApplicationError) and err.type == Failure.JOB_FAILED:
            return err
        cause = err.cause if isinstance(err, ActivityError) and err.cause else err
        reason = f"{type(cause).__name__}: {cause}"
        if _error_type(err) != Failure.JOB_NOT_FOUND:
            done: FinalizeResult = await self._run_step(
                JobActivities.fail_job,
                FailInput(job_id=self._job.job_id, reason=reason),
                check=False,
            )
            self._set_status(done.status)
        self._set_phase("failed")
        return failure(Failure.JOB_FAILED, f"job {self._job.job_id} failed: {reason}")

    async def _cancel_self(self, reason: str) -> None:
        """Turn a decision to stop into a real cancel request, then take the cancel path."""
        await self._request_cancel(reason)
        await workflow.wait_condition(lambda: workflow.cancellation_reason() is not None)
        raise asyncio.CancelledError(reason)

    async def _request_cancel(self, reason: str) -> None:
        info = workflow.info()
        await self._run_step(
            TemporalActivities.request_cancel,
            SelfCancelInput(workflow_id=info.workflow_id, run_id=info.run_id, reason=reason),
            check=False,
        )

    async def _check_job(self) -> None:
        """Between phases: a Temporal cancel request, or a job row cancelled elsewhere."""
        self._raise_if_cancel_requested()
        check = await self._run_step(JobActivities.check_cancel, self._job)
        if check.cancelling:
            await self._cancel_self(f"the job row says {check.status}")

    def _raise_if_cancel_requested(self) -> None:
        # A cancel can lose the race to an activity that just finished: honour it here.
        if workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError(workflow.cancellation_reason())

    # --- activity calls ------------------------------------------------------------------------

    async def _run_step(
        self, activity: Activity[_Owner, _In, _Out], arg: _In, *, check: bool = True
    ) -> _Out:
        """A step: a short activity on the main queue that always runs to its end. A cancel
        arriving meanwhile waits for it (so we know whether its write happened) and is honoured
        afterwards."""
        # Before start_job answered, the configured timeout is not known yet.
        timeout = self._config.short_timeout if self._config is not None else STEP_TIMEOUT
        handle = workflow.start_activity_method(
            activity, arg, start_to_close_timeout=timeout, retry_policy=RETRY
        )
        try:
            result = await asyncio.shield(handle)
        except asyncio.CancelledError:
            result = await handle
        if check:
            self._raise_if_cancel_requested()
        return result

    def _start_phase(
        self, activity: Activity[_Owner, _In, _Out], arg: _In
    ) -> workflow.ActivityHandle[_Out]:
        """A phase: a long, heartbeating activity on the long queue that a cancel stops at its
        next heartbeat; wind-down cancels and awaits every phase still running."""
        assert self._config is not None
        handle = workflow.start_activity_method(
            activity,
            arg,
            task_queue=self._config.long_task_queue,
            start_to_close_timeout=PHASE_TIMEOUT,
            heartbeat_timeout=self._config.heartbeat_timeout,
            retry_policy=RETRY,
            cancellation_type=WAIT,
        )
        self._handles.append(handle)
        return handle

    async def _run_phase(self, activity: Activity[_Owner, _In, _Out], arg: _In) -> _Out:
        handle = self._start_phase(activity, arg)
        # Through workflow.wait, not on the handle: a cancel reaches this code at once (so the
        # job is CANCELING right away), while the activity stops at its next heartbeat.
        await workflow.wait([handle])
        result = handle.result()
        self._raise_if_cancel_requested()
        return result

    # --- state --------------------------------------------------------------------------------

    def _set_phase(self, phase: str) -> None:
        self._state.phase = phase
        self._show_details()

    def _show_details(self) -> None:
        """The Web UI's "current details" of the run: its phase, status and latest counts (no
        history event: answered from memory, like a query)."""
        s = self._state
        lines = [f"**{s.phase}** (job {s.job_id} {s.status.value})"]
        if s.total:
            lines.append(f"images: {s.total}")
        if s.published:
            lines.append(f"tasks published: {s.published}")
        if s.processed or s.failed:
            lines.append(
                f"processed: {s.processed}, failed: {s.failed}, detections: {s.detections},"
                f" classifications: {s.classifications}"
            )
        workflow.set_current_details("\n\n".join(lines))

    def _set_status(self, status: JobState, project_id: int | None = None) -> None:
        if status == self._state.status and project_id is None:
            return
        self._state.status = status
        self._show_details()
        updates: list[SearchAttributeUpdate[Any]] = [
            search_attributes.JOB_STATUS.value_set(status.value)
        ]
        if project_id is not None:
            updates += [
                search_attributes.JOB_ID.value_set(self._job.job_id),
                search_attributes.PROJECT_ID.value_set(project_id),
            ]
        workflow.upsert_search_attributes(updates)
