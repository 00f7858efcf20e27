"""The own paths of the workflow of a job whose code is Antenna's (AntennaTaskWorkflow), with every
activity mocked by name (as the async ML one's in test_ml_job_paths_mocked.py): run_job sent and
the row seen final (SUCCESS, FAILURE, REVOKED by Antenna), the row final before the send, a lost
task sent again up to max_sends, a refused send; the paths every job workflow shares are in
test_job_lifecycle_paths_mocked.py. On the session's Temporal dev server with no Postgres or
RabbitMQ; the real activities are checked end to end by tests/integration/test_antenna_task_jobs.py.
"""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus

from activities.antenna_task.models import SendInput, TaskOutcome, WaitInput, WaitResult
from core.errors import Failure, failure
from core.states import JobState
from core.workflow_io import JobWorkflowResult
from tests.helpers.mocked_job import assert_revoked, job_failed, progress, start
from tests.helpers.mocked_workflows import MockedAntennaJob, final

LOST = WaitResult(outcome=TaskOutcome.LOST, status=JobState.STARTED)
SENT_AND_WAITED = ["start_antenna_job", "send_run_job", "wait_for_row"]


async def test_the_rows_final_status_written_by_antennas_code_ends_the_run(
    antenna_job: MockedAntennaJob,
) -> None:
    handle = await start(antenna_job)

    result = await handle.result()
    assert result == JobWorkflowResult(job_id=result.job_id, status=JobState.SUCCESS)
    assert antenna_job.names() == SENT_AND_WAITED  # the task ended by itself: nothing to revoke
    assert antenna_job.inputs("send_run_job") == [SendInput(job_id=result.job_id, previous=None)]
    assert antenna_job.inputs("wait_for_row") == [WaitInput(job_id=result.job_id, task_id="task-1")]
    state = await progress(handle)
    assert (state.phase, state.status) == ("done", JobState.SUCCESS)


async def test_a_row_final_before_the_send_ends_the_run_without_a_task(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.row_final_at_send = JobState.SUCCESS
    handle = await start(antenna_job)

    assert (await handle.result()).status == JobState.SUCCESS
    assert antenna_job.names() == ["start_antenna_job", "send_run_job"]


async def test_a_failure_written_by_antennas_code_fails_the_run(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.waits = [final(JobState.FAILURE)]
    handle = await start(antenna_job)

    cause = await job_failed(handle)
    assert "Antenna's run_job ended FAILURE" in cause.message
    assert antenna_job.names() == SENT_AND_WAITED  # Antenna wrote the status: no fail_job
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def test_a_row_revoked_by_antenna_takes_the_cancel_path(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.waits = [final(JobState.REVOKED)]
    handle = await start(antenna_job)

    await assert_revoked(antenna_job, handle)
    assert antenna_job.names()[3:] == [
        "request_cancel", "mark_canceling", "revoke_run_job", "revoke_job",
    ]  # fmt: skip
    [revoked] = antenna_job.inputs("revoke_run_job")
    assert (revoked.task_id, revoked.reason) == ("task-1", "the job became REVOKED while finishing")


async def test_a_lost_task_is_sent_again_naming_the_one_it_replaces(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.waits = [LOST, final(JobState.SUCCESS)]
    handle = await start(antenna_job)

    job_id = (await handle.result()).job_id
    assert antenna_job.inputs("send_run_job") == [
        SendInput(job_id=job_id, previous=None),
        SendInput(job_id=job_id, previous="task-1"),
    ]
    assert [w.task_id for w in antenna_job.inputs("wait_for_row")] == ["task-1", "task-2"]
    assert "revoke_run_job" not in antenna_job.names()


async def test_a_task_lost_max_sends_times_fails_the_job_and_revokes_the_last_one(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.max_sends, antenna_job.waits = 2, [LOST, LOST]
    handle = await start(antenna_job)

    await job_failed(handle)
    assert antenna_job.names() == [
        *SENT_AND_WAITED, "send_run_job", "wait_for_row", "revoke_run_job", "fail_job",
    ]  # fmt: skip
    assert antenna_job.inputs("revoke_run_job")[0].task_id == "task-2"
    [failed] = antenna_job.inputs("fail_job")
    assert failed.reason == (
        "ApplicationError: AntennaTaskLost: Antenna's Celery worker lost run_job 2 times"
        " (last task task-2)"
    )
    state = await progress(handle)
    assert (state.phase, state.status) == ("failed", JobState.FAILURE)


async def test_a_send_refused_fails_the_job_with_no_task_to_revoke(
    antenna_job: MockedAntennaJob,
) -> None:
    antenna_job.raises["send_run_job"] = failure(Failure.UNSUPPORTED_JOB, "standalone")
    handle = await start(antenna_job)

    await job_failed(handle)
    assert antenna_job.names() == ["start_antenna_job", "send_run_job", "fail_job"]
    assert (
        antenna_job.inputs("fail_job")[0].reason == "ApplicationError: UnsupportedJob: standalone"
    )
