"""The job workflow: one durable run per job (id ``job-{id}``) for an async_api ML job.

start -> reset leftovers -> collect -> prepare queue -> publish || aggregate -> finalize, with
cleanup (stream, consumer, Redis keys) always. The lifecycle every job type shares (the cancel
paths, failure, revoke, wind-down) is JobLifecycle's (workflows/job_lifecycle.py),
collect and finalize MlJobLifecycle's (workflows/ml_job.py).

History is O(1) in images: a fixed set of activities, no per-image or per-batch events; counts
live in Postgres and Redis, and the progress query returns the latest counts known here.

Signals ``pause`` and ``resume`` (also sent by the API and ``job pause|resume``, which write the
database first): a paused run hands out no tasks while the aggregator keeps saving the results
already in flight; resume hands out the rest. They are applied one at a time, in order, by the
set_paused activity, and only the last one wanted counts.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.async_api.models import (
        AggregateInput,
        AggregateResult,
        PublishInput,
        PublishResult,
    )
    from activities.async_api.results import ResultActivities
    from activities.async_api.task_queue import TaskQueueActivities
    from activities.jobs import JobActivities
    from activities.models import PauseInput
    from core import naming
    from core.counters import AggregateCounters
    from core.workflow_io import JobWorkflowInput, JobWorkflowResult
    from workflows.ml_job import MlJobLifecycle


@workflow.defn(name=naming.JOB_WORKFLOW)
class JobWorkflow(MlJobLifecycle):
    workflow_name = naming.JOB_WORKFLOW

    @workflow.init
    def __init__(self, inp: JobWorkflowInput) -> None:
        super().__init__(inp)
        self._pause_wanted = False
        self._pause_request: int | None = None
        self._pause_lock = asyncio.Lock()

    @workflow.run
    async def run(self, inp: JobWorkflowInput) -> JobWorkflowResult:
        return await self._run_job()

    @workflow.signal(name=naming.PAUSE_SIGNAL)
    async def pause(self, reason: str | None = None, request: int | None = None) -> None:
        """No tasks are handed out until ``resume``; results in flight are still saved.
        ``request``: the number our API gave the request (it applied it already); a signal
        handled after a newer request changes nothing."""
        await self._apply_pause(True, reason or "pause signal", request)

    @workflow.signal(name=naming.RESUME_SIGNAL)
    async def resume(self, reason: str | None = None, request: int | None = None) -> None:
        await self._apply_pause(False, reason or "resume signal", request)

    async def _apply_pause(self, paused: bool, reason: str, request: int | None = None) -> None:
        self._pause_wanted = paused
        self._pause_request = request
        if self._start is None:
            return  # the run does not own the job yet: _work applies what is wanted then
        async with self._pause_lock:
            if (
                self._finished
                or workflow.cancellation_reason() is not None
                or self._pause_wanted != paused
                or self._state.paused == paused
            ):
                return
            self._state.paused = await self._run_step(
                JobActivities.set_paused,
                PauseInput(job_id=self._job.job_id, paused=paused, reason=reason, request=request),
                check=False,
            )

    async def _work(self) -> JobWorkflowResult:
        if self._pause_wanted:
            await self._apply_pause(
                True, "pause signal (sent before the job started)", self._pause_request
            )
        await self._run_step(TaskQueueActivities.reset_job_queue, self._job)
        total = await self._collect()
        if total == 0:
            return await self._finalize(AggregateCounters())

        await self._run_step(TaskQueueActivities.prepare_job_queue, self._job)
        self._set_phase("processing")
        aggregate = self._start_phase(
            ResultActivities.aggregate_results,
            AggregateInput(job_id=self._job.job_id, total=total),
        )
        publish = self._start_phase(
            TaskQueueActivities.publish_tasks,
            PublishInput(job_id=self._job.job_id, total=total),
        )
        # Side by side; an error in either (e.g. the aggregator seeing a cancelled job row)
        # ends the wait at once instead of after the other one.
        await workflow.wait([publish, aggregate], return_when=asyncio.FIRST_EXCEPTION)
        for handle in (aggregate, publish):
            if handle.done():
                handle.result()  # raises the first failure
        published: PublishResult = publish.result()
        self._state.published = published.published
        aggregated: AggregateResult = aggregate.result()
        self._raise_if_cancel_requested()
        await self._check_job()
        return await self._finalize(aggregated.counters)

    async def _cleanup(self) -> None:
        """The job's stream, consumer and Redis keys, whatever state the run ends in."""
        await self._run_step(TaskQueueActivities.cleanup_job_queue, self._job, check=False)
