"""The paths every job workflow shares (JobLifecycle: the cancel paths, failure, a job found final
or gone), taken by the sync ML, internal (populate, export) and Antenna-task workflows with every
activity mocked by name (tests/helpers/mocked_workflows.py), as the async ML one's are in
test_ml_job_paths_mocked.py. On the session's Temporal dev server, with no other service; each
workflow's own paths are in test_<workflow>_paths_mocked.py, the real activities are checked end
to end by test_sync_job.py, test_internal_jobs.py and test_antenna_task_jobs.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.models import FinalizeResult, StartOutcome
from core.errors import Failure, failure
from core.states import JobState, JobType
from core.workflow_io import JobWorkflowResult
from tests.helpers.mocked_job import (
    MockedJob,
    assert_revoked,
    job_failed,
    mocked_worker,
    new_queue,
    progress,
    start,
)
from tests.helpers.mocked_workflows import MockedAntennaJob, MockedInternalJob, MockedSyncJob
from workflows.antenna_task_workflow import AntennaTaskWorkflow
from workflows.internal_job_workflow import InternalJobWorkflow
from workflows.sync_job_workflow import SyncJobWorkflow


@dataclass(frozen=True)
class Case:
    job_class: type[MockedJob]
    workflow: Any
    start: str  # the activity that takes the job
    work: str  # the long activity the job spends its time in
    phase: str  # the progress query's phase meanwhile
    fails_with: Failure  # what the work fails with for good
    job_type: JobType | None = None
    # What a run that did not finish its job removes (once the work started; before).
    cleanup: tuple[str, ...] = ()
    cleanup_unstarted: tuple[str, ...] = ()


CASES = {
    "sync": Case(
        MockedSyncJob, SyncJobWorkflow, "start_job", "process_sync_batches", "processing",
        Failure.PIPELINE_NOT_CONFIGURED,
    ),
    "populate": Case(
        MockedInternalJob, InternalJobWorkflow, "start_job", "populate_collection", "populating",
        Failure.POPULATE_FAILED, JobType.POPULATE_CAPTURES_COLLECTION,
    ),
    "export": Case(
        MockedInternalJob, InternalJobWorkflow, "start_job", "export_data", "exporting",
        Failure.EXPORT_FAILED, JobType.DATA_EXPORT, ("remove_export",), ("remove_export",),
    ),
    "antenna": Case(
        MockedAntennaJob, AntennaTaskWorkflow, "start_antenna_job", "wait_for_row",
        "running on Antenna's worker (task task-1)", Failure.UNSUPPORTED_JOB,
        cleanup=("revoke_run_job",),
    ),
}  # fmt: skip
# The workflows that check the job row between phases and write the final status themselves
# (Antenna's code writes it for AntennaTaskWorkflow).
FINISHING = ["sync", "populate", "export"]


@pytest_asyncio.fixture(params=list(CASES))
async def case(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment
) -> AsyncIterator[tuple[Case, MockedJob]]:
    """A workflow's case and its MockedJob, with a worker running the workflow."""
    taken = CASES[request.param]
    job = taken.job_class(temporal_env.client, new_queue())
    job.job_type = taken.job_type or job.job_type
    async with mocked_worker(job, taken.workflow):
        yield taken, job


async def working(case: Case, job: MockedJob) -> WorkflowHandle[Any, JobWorkflowResult]:
    """A run started and inside its work, which runs until cancelled."""
    job.hold.add(case.work)
    handle = await start(job)
    await asyncio.wait_for(job.started[case.work].wait(), 30)
    return handle


def assert_cleaned_up(job: MockedJob, *cleanup: str) -> None:
    """What the work may have left was removed (an export's partial file, Antenna's task)."""
    names = job.names()
    assert [n for n in names if n in ("remove_export", "revoke_run_job")] == list(cleanup)
    assert all(not removed.keep_final for removed in job.inputs("remove_export"))
    assert all(revoked.task_id == "task-1" for revoked in job.inputs("revoke_run_job"))


async def assert_cancelled_itself(
    job: MockedJob,
    handle: WorkflowHandle[Any, JobWorkflowResult],
    after: str,
    reason: str,
    cleanup: tuple[str, ...],
) -> None:
    """Right after ``after``, the run decided to stop: a cancel request of its own, with the
    reason, then the cancel path."""
    await assert_revoked(job, handle)
    assert job.names()[-4 - len(cleanup) :] == [
        after, "request_cancel", "mark_canceling", *cleanup, "revoke_job",
    ]  # fmt: skip
    assert_cleaned_up(job, *cleanup)
    assert job.inputs("request_cancel")[0].reason == reason


async def test_cancel_while_working_stops_the_work_and_revokes_the_job(
    case: tuple[Case, MockedJob],
) -> None:
    taken, job = case
    handle = await working(taken, job)
    state = await progress(handle)
    assert (state.phase, state.status) == (taken.phase, JobState.STARTED)
    await handle.cancel(reason="stop it")

    await assert_revoked(job, handle)
    assert job.stopped == [taken.work]
    assert job.names()[-2 - len(taken.cleanup) :] == [
        "mark_canceling",
        *taken.cleanup,
        "revoke_job",
    ]
    assert_cleaned_up(job, *taken.cleanup)
    assert job.inputs("revoke_job")[0].reason == "stop it"
    assert "request_cancel" not in job.names()  # a Temporal cancel needs no self-cancel


async def test_the_cancel_signal_takes_the_same_path(case: tuple[Case, MockedJob]) -> None:
    taken, job = case
    handle = await working(taken, job)
    await handle.signal(taken.workflow.cancel, "cancelled from the UI")

    await assert_revoked(job, handle)
    assert job.stopped == [taken.work]
    assert_cleaned_up(job, *taken.cleanup)
    [asked] = job.inputs("request_cancel")
    assert (asked.workflow_id, asked.reason) == (handle.id, "cancelled from the UI")
    assert job.inputs("revoke_job")[0].reason == "cancelled from the UI"


async def test_a_job_cancelled_before_its_run_started_is_revoked(
    case: tuple[Case, MockedJob],
) -> None:
    taken, job = case
    job.start_outcome = StartOutcome.CANCELING
    handle = await start(job)

    await assert_revoked(job, handle)
    assert job.names() == [
        taken.start, "request_cancel", "mark_canceling", *taken.cleanup_unstarted, "revoke_job",
    ]  # fmt: skip
    assert job.inputs("request_cancel")[0].reason == "the job was cancelled before it started"


async def test_a_non_retryable_failure_of_the_work_fails_the_job(
    case: tuple[Case, MockedJob],
) -> None:
    taken, job = case
    job.raises[taken.work] = failure(taken.fails_with, "no way")
    handle = await start(job)

    cause = await job_failed(handle)
    assert cause.non_retryable
    assert job.names().count(taken.work) == 1  # not retried
    assert job.names()[-2 - len(taken.cleanup) :] == [taken.work, *taken.cleanup, "fail_job"]
    assert_cleaned_up(job, *taken.cleanup)
    [failed] = job.inputs("fail_job")
    assert failed.reason == f"ApplicationError: {taken.fails_with.value}: no way"
    assert "revoke_job" not in job.names()
    state = await progress(handle)
    assert (state.phase, state.status) == ("failed", JobState.FAILURE)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def test_a_job_already_final_is_left_as_it_is(case: tuple[Case, MockedJob]) -> None:
    taken, job = case
    job.start_outcome, job.start_status = StartOutcome.FINAL, JobState.SUCCESS
    handle = await start(job)

    result = await handle.result()
    assert result == JobWorkflowResult(job_id=result.job_id, status=JobState.SUCCESS)
    assert job.names() == [taken.start]
    assert (await progress(handle)).phase == "done"


async def test_a_gone_job_fails_the_run_and_writes_nothing(case: tuple[Case, MockedJob]) -> None:
    taken, job = case
    job.raises[taken.start] = failure(Failure.JOB_NOT_FOUND, "no job row")
    handle = await start(job)

    await job_failed(handle)
    assert job.names() == [taken.start]  # no fail_job: there is no row to write
    assert (await progress(handle)).phase == "failed"


@pytest.mark.parametrize("case", FINISHING, indirect=True)
async def test_a_row_cancelled_while_working_revokes_the_job(
    case: tuple[Case, MockedJob],
) -> None:
    """The work sees the row CANCELING and fails (as the real activities do): the run turns
    that into a cancel of its own."""
    taken, job = case
    handle = await working(taken, job)
    job.row_cancelling = True

    reason = "the job row says it is cancelled"
    await assert_cancelled_itself(job, handle, taken.work, reason, taken.cleanup)


@pytest.mark.parametrize("case", FINISHING, indirect=True)
async def test_a_row_cancelled_between_phases_revokes_the_job(
    case: tuple[Case, MockedJob],
) -> None:
    """check_cancel finds the row CANCELING (sync: after collect; internal: after the work)."""
    taken, job = case
    job.row_cancelling = True
    handle = await start(job)

    # The sync job checks before its work (nothing to remove), the internal ones after it.
    cleanup = () if taken.workflow is SyncJobWorkflow else taken.cleanup
    reason = "the job row says CANCELING"
    await assert_cancelled_itself(job, handle, "check_cancel", reason, cleanup)


@pytest.mark.parametrize("case", FINISHING, indirect=True)
async def test_a_job_cancelled_while_finishing_takes_the_cancel_path(
    case: tuple[Case, MockedJob],
) -> None:
    """The final status write found the row CANCELING (its guarded update moved nothing)."""
    taken, job = case
    job.finalized = FinalizeResult(status=JobState.CANCELING, moved=False)
    handle = await start(job)

    finishing = "finalize_job" if taken.workflow is SyncJobWorkflow else "finish_internal_job"
    reason = "the job became CANCELING while finishing"
    await assert_cancelled_itself(job, handle, finishing, reason, taken.cleanup)
