"""The async ML job workflow's cancel and failure paths with every activity mocked by name.

Stand-ins registered under the real activity names, taking and returning the real input and
output models (as in temporalio/samples-python ``tests/hello/hello_activity_test.py``), run the
real JobWorkflow on the session's Temporal dev server: no Postgres, NATS or Redis, each test in
a second or two. What the stand-ins record is what the workflow asked for, in order; the real
activities' own behaviour is checked by the tests next to this one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.async_api.models import (
    AggregateInput,
    AggregateResult,
    PublishInput,
    PublishResult,
)
from activities.models import (
    CancelCheck,
    CollectInput,
    CollectResult,
    FailInput,
    FinalizeInput,
    FinalizeResult,
    JobConfig,
    JobRef,
    RevokeInput,
    SelfCancelInput,
    StartInput,
    StartOutcome,
    StartResult,
)
from core.counters import AggregateCounters
from core.errors import Failure, failure
from core.states import JobState
from core.workflow_io import JobWorkflowInput, JobWorkflowResult, WorkflowProgress
from tests.helpers import eventually
from tests.helpers.db import NAMES
from workflows.job_workflow import JobWorkflow

THRESHOLD = 0.5


@dataclass
class MockedJob:
    """The activities of one async ML job, mocked: what they answer and what they were asked."""

    client: Client
    queue: str
    total: int = 10
    counters: AggregateCounters = field(default_factory=AggregateCounters)
    stalled: bool = False
    # Aggregation runs until cancelled (heartbeating, as the real one does while it waits).
    aggregate_waits: bool = False
    # Activity name -> the error its stand-in raises.
    raises: dict[str, BaseException] = field(default_factory=dict)
    # What check_cancel finds in the job row.
    row_cancelling: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    aggregating: asyncio.Event = field(default_factory=asyncio.Event)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    def _called(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.raises:
            raise self.raises[name]

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="start_job")
        async def start_job(inp: StartInput) -> StartResult:
            self._called("start_job", inp)
            config = JobConfig(
                long_task_queue=self.queue,
                heartbeat_timeout=timedelta(seconds=1),
                failure_threshold=THRESHOLD,
                short_timeout=timedelta(seconds=10),
            )
            return StartResult(
                outcome=StartOutcome.STARTED, status=JobState.PENDING, project_id=1, config=config
            )

        @activity.defn(name="check_cancel")
        async def check_cancel(ref: JobRef) -> CancelCheck:
            self._called("check_cancel", ref)
            status = JobState.CANCELING if self.row_cancelling else JobState.STARTED
            return CancelCheck(status=status, cancelling=self.row_cancelling)

        @activity.defn(name="mark_canceling")
        async def mark_canceling(ref: JobRef) -> None:
            self._called("mark_canceling", ref)

        @activity.defn(name="finalize_job")
        async def finalize_job(inp: FinalizeInput) -> FinalizeResult:
            self._called("finalize_job", inp)
            # The domain rule the real activity applies (core/counters.py).
            return FinalizeResult(status=inp.counters.final_status(THRESHOLD), moved=True)

        @activity.defn(name="fail_job")
        async def fail_job(inp: FailInput) -> FinalizeResult:
            self._called("fail_job", inp)
            return FinalizeResult(status=JobState.FAILURE, moved=True)

        @activity.defn(name="revoke_job")
        async def revoke_job(inp: RevokeInput) -> FinalizeResult:
            self._called("revoke_job", inp)
            return FinalizeResult(status=JobState.REVOKED, moved=True)

        @activity.defn(name="request_cancel")
        async def request_cancel(inp: SelfCancelInput) -> None:
            self._called("request_cancel", inp)
            handle = self.client.get_workflow_handle(inp.workflow_id, run_id=inp.run_id)
            await handle.cancel(reason=inp.reason)

        @activity.defn(name="collect_images")
        async def collect_images(ref: CollectInput) -> CollectResult:
            self._called("collect_images", ref)
            return CollectResult(total=self.total, candidates=self.total)

        @activity.defn(name="reset_job_queue")
        async def reset_job_queue(ref: JobRef) -> None:
            self._called("reset_job_queue", ref)

        @activity.defn(name="prepare_job_queue")
        async def prepare_job_queue(ref: JobRef) -> None:
            self._called("prepare_job_queue", ref)

        @activity.defn(name="cleanup_job_queue")
        async def cleanup_job_queue(ref: JobRef) -> None:
            self._called("cleanup_job_queue", ref)

        @activity.defn(name="publish_tasks")
        async def publish_tasks(inp: PublishInput) -> PublishResult:
            self._called("publish_tasks", inp)
            return PublishResult(published=inp.total, no_url=0, seconds=0.0)

        @activity.defn(name="aggregate_results")
        async def aggregate_results(inp: AggregateInput) -> AggregateResult:
            self._called("aggregate_results", inp)
            self.aggregating.set()
            while self.aggregate_waits:
                activity.heartbeat()
                await asyncio.sleep(0.05)  # cancelled here once a heartbeat learns of it
            return AggregateResult(
                counters=self.counters, reconciled=self.counters.failed, stalled=self.stalled
            )

        return [
            start_job, check_cancel, mark_canceling, finalize_job, fail_job, revoke_job,
            request_cancel, collect_images, reset_job_queue, prepare_job_queue,
            cleanup_job_queue, publish_tasks, aggregate_results,
        ]  # fmt: skip


@pytest_asyncio.fixture
async def mocked(temporal_env: WorkflowEnvironment) -> AsyncIterator[MockedJob]:
    """A MockedJob and a worker running JobWorkflow with its stand-ins on a queue of its own
    (both of the workflow's queues are this one)."""
    job = MockedJob(client=temporal_env.client, queue=f"aj-mocked-{uuid.uuid4().hex[:10]}")
    async with Worker(
        temporal_env.client,
        task_queue=job.queue,
        workflows=[JobWorkflow],
        activities=job.activities(),
    ):
        yield job


async def start(job: MockedJob) -> WorkflowHandle[Any, JobWorkflowResult]:
    job_id = uuid.uuid4().int % 10**12
    return await job.client.start_workflow(
        JobWorkflow.run,
        JobWorkflowInput(job_id=job_id),
        id=NAMES.workflow_id(job_id),
        task_queue=job.queue,
        result_type=JobWorkflowResult,
        execution_timeout=timedelta(seconds=60),
    )


async def ended_with(handle: WorkflowHandle[Any, JobWorkflowResult]) -> BaseException:
    """The cause of the run's failure (a CancelledError for a cancelled run)."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert failed.value.cause is not None
    return failed.value.cause


async def progress(handle: WorkflowHandle[Any, JobWorkflowResult]) -> WorkflowProgress:
    return await handle.query(JobWorkflow.progress, result_type=WorkflowProgress)


async def assert_revoked(job: MockedJob, handle: WorkflowHandle[Any, JobWorkflowResult]) -> None:
    """The cancel path: CANCELING first, the running phases stopped, cleanup, REVOKED, and the
    run closed as Canceled without finalizing or failing the job."""
    assert isinstance(await ended_with(handle), CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    names = job.names()
    assert names.index("mark_canceling") < names.index("cleanup_job_queue")
    assert names.index("cleanup_job_queue") < names.index("revoke_job")
    assert names.count("revoke_job") == 1
    assert "finalize_job" not in names and "fail_job" not in names
    state = await progress(handle)
    assert (state.phase, state.status) == ("cancelled", JobState.REVOKED)


async def test_cancel_while_waiting_for_results_revokes_the_job(mocked: MockedJob) -> None:
    mocked.aggregate_waits = True
    handle = await start(mocked)
    await asyncio.wait_for(mocked.aggregating.wait(), 30)
    await handle.cancel(reason="stop it")

    await assert_revoked(mocked, handle)
    assert mocked.names()[-3:] == ["mark_canceling", "cleanup_job_queue", "revoke_job"]
    assert mocked.inputs("revoke_job")[0].reason == "stop it"
    assert "request_cancel" not in mocked.names()  # a Temporal cancel needs no self-cancel


async def test_cancel_signal_takes_the_same_path(mocked: MockedJob) -> None:
    mocked.aggregate_waits = True
    handle = await start(mocked)
    await asyncio.wait_for(mocked.aggregating.wait(), 30)
    await handle.signal(JobWorkflow.cancel, "cancelled from the UI")

    await assert_revoked(mocked, handle)
    [asked] = mocked.inputs("request_cancel")
    assert (asked.workflow_id, asked.reason) == (handle.id, "cancelled from the UI")
    assert mocked.inputs("revoke_job")[0].reason == "cancelled from the UI"


async def test_a_job_row_cancelled_elsewhere_revokes_the_job(mocked: MockedJob) -> None:
    mocked.row_cancelling = True
    handle = await start(mocked)

    await assert_revoked(mocked, handle)
    assert "prepare_job_queue" not in mocked.names()  # stopped right after collect
    [asked] = mocked.inputs("request_cancel")
    assert asked.reason == "the job row says CANCELING"


@pytest.mark.parametrize("activity_name", ["collect_images", "publish_tasks"])
async def test_a_non_retryable_activity_failure_fails_the_job(
    mocked: MockedJob, activity_name: str
) -> None:
    mocked.raises[activity_name] = failure(Failure.PIPELINE_NOT_CONFIGURED, "no pipeline")
    mocked.aggregate_waits = activity_name == "publish_tasks"  # the other phase is stopped
    handle = await start(mocked)

    cause = await ended_with(handle)
    assert isinstance(cause, ApplicationError) and cause.type == Failure.JOB_FAILED
    assert cause.non_retryable
    assert mocked.names().count(activity_name) == 1  # not retried
    [failed] = mocked.inputs("fail_job")
    assert failed.reason == "ApplicationError: PipelineNotConfigured: no pipeline"
    names = mocked.names()
    assert names.index("cleanup_job_queue") < names.index("fail_job")
    assert "finalize_job" not in names and "revoke_job" not in names
    state = await progress(handle)
    assert (state.phase, state.status) == ("failed", JobState.FAILURE)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def test_a_stall_past_the_failure_threshold_fails_the_job(mocked: MockedJob) -> None:
    mocked.counters = AggregateCounters(total=10, processed=4, failed=6, detections=4)
    mocked.stalled = True
    handle = await start(mocked)

    cause = await ended_with(handle)
    assert isinstance(cause, ApplicationError) and cause.type == Failure.JOB_FAILED
    assert cause.non_retryable
    assert "6 of 10 images failed (threshold 50%)" in cause.message
    [result] = cause.details
    assert result == JobWorkflowResult(
        job_id=mocked.inputs("start_job")[0].job_id,
        status=JobState.FAILURE,
        total=10,
        processed=4,
        failed=6,
    ).model_dump(mode="json")
    [finalized] = mocked.inputs("finalize_job")
    assert finalized.counters == mocked.counters
    assert "fail_job" not in mocked.names()  # the final status was written by finalize_job
    assert mocked.names()[-1] == "cleanup_job_queue"
    state = await progress(handle)
    assert (state.status, state.processed, state.failed) == (JobState.FAILURE, 4, 6)


async def test_failures_within_the_threshold_end_in_success(mocked: MockedJob) -> None:
    mocked.counters = AggregateCounters(total=10, processed=5, failed=5)
    handle = await start(mocked)

    result = await handle.result()
    assert (result.status, result.processed, result.failed) == (JobState.SUCCESS, 5, 5)
    assert mocked.names() == [
        "start_job", "reset_job_queue", "collect_images", "check_cancel", "prepare_job_queue",
        "aggregate_results", "publish_tasks", "check_cancel", "finalize_job", "cleanup_job_queue",
    ]  # fmt: skip


async def test_progress_is_queryable_while_results_are_awaited(mocked: MockedJob) -> None:
    mocked.aggregate_waits = True
    handle = await start(mocked)
    await asyncio.wait_for(mocked.aggregating.wait(), 30)

    async def processing() -> bool:
        return (await progress(handle)).phase == "processing"

    await eventually(processing, within=10)
    state = await progress(handle)
    assert (state.status, state.total) == (JobState.STARTED, 10)
    await handle.cancel()
    assert isinstance(await ended_with(handle), CancelledError)
