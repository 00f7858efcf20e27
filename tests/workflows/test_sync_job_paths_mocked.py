"""The SYNC_API job workflow's own paths with every activity mocked by name (as the async ML one's
in test_ml_job_paths_mocked.py): the batches sent to the chosen service, an empty job, no live
service, too many failed images; the paths every job workflow shares are in
test_job_lifecycle_paths_mocked.py. On the session's Temporal dev server with no Postgres or
processing service; the real activities are checked end to end by test_sync_job.py."""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus

from core.counters import AggregateCounters
from core.errors import Failure, failure
from core.states import JobState
from tests.helpers.mocked_job import job_failed, progress, start
from tests.helpers.mocked_workflows import SERVICE, MockedSyncJob

SUCCESS_PATH = [
    "start_job", "collect_images", "check_cancel", "choose_sync_service",
    "process_sync_batches", "check_cancel", "finalize_job",
]  # fmt: skip


async def test_the_batches_go_to_the_chosen_service_and_the_job_ends_in_success(
    sync_job: MockedSyncJob,
) -> None:
    handle = await start(sync_job)

    result = await handle.result()
    assert (result.status, result.total, result.processed, result.failed) == (
        JobState.SUCCESS, 10, 10, 0,
    )  # fmt: skip
    assert sync_job.names() == SUCCESS_PATH
    [asked] = sync_job.inputs("process_sync_batches")
    assert (asked.job_id, asked.total, asked.service) == (result.job_id, 10, SERVICE)
    [finalized] = sync_job.inputs("finalize_job")
    assert finalized.counters == sync_job.processed
    state = await progress(handle)
    assert (state.phase, state.status, state.detections) == ("done", JobState.SUCCESS, 30)


async def test_a_job_without_images_is_finalized_without_a_service(sync_job: MockedSyncJob) -> None:
    sync_job.total = 0
    handle = await start(sync_job)

    assert (await handle.result()).status == JobState.SUCCESS
    assert sync_job.names() == ["start_job", "collect_images", "check_cancel", "finalize_job"]
    assert sync_job.inputs("finalize_job")[0].counters == AggregateCounters()


async def test_no_live_service_fails_the_job(sync_job: MockedSyncJob) -> None:
    sync_job.raises["choose_sync_service"] = failure(Failure.NO_LIVE_SERVICE, "none is ready")
    handle = await start(sync_job)

    await job_failed(handle)
    assert sync_job.names() == [*SUCCESS_PATH[:4], "fail_job"]
    [failed] = sync_job.inputs("fail_job")
    assert failed.reason == "ApplicationError: NoLiveService: none is ready"
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def test_too_many_failed_images_fail_the_job_through_finalize(
    sync_job: MockedSyncJob,
) -> None:
    sync_job.processed = AggregateCounters(total=10, processed=3, failed=7)
    handle = await start(sync_job)

    cause = await job_failed(handle)
    assert "7 of 10 images failed (threshold 50%)" in cause.message
    [result] = cause.details
    assert (result["status"], result["processed"], result["failed"]) == ("FAILURE", 3, 7)
    assert sync_job.names() == SUCCESS_PATH  # the final status was written by finalize_job
