"""The async ML job workflow's cancel and failure paths with every activity mocked by name.

Stand-ins registered under the real activity names, taking and returning the real input and
output models (as in temporalio/samples-python ``tests/hello/hello_activity_test.py``), run the
real JobWorkflow on the session's Temporal dev server: no Postgres, NATS or Redis, each test in
a second or two. What the stand-ins record is what the workflow asked for, in order; the real
activities' own behaviour is checked by the tests next to this one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from core.counters import AggregateCounters
from core.errors import Failure, failure
from core.states import JobState
from core.workflow_io import JobWorkflowResult
from tests.helpers import eventually
from tests.helpers.mocked_job import MockedJob, ended_with, progress, start
from workflows.job_workflow import JobWorkflow


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
