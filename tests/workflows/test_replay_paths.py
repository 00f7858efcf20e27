"""Every path of the async ML job workflow replays its own history (issue 21).

Each path runs the real JobWorkflow (activities mocked, tests/workflows/test_ml_job_paths_mocked)
to its end; then its recorded history is replayed with the SDK's Replayer, and the closed run is
queried, which the server answers by replaying that history on a worker (the query that once
failed with "No command scheduled for event 6"). The cancel paths are taken in each phase: a
Temporal cancel, the ``cancel`` signal and a job row cancelled elsewhere, while collecting and
while processing, and a row cancelled before the run started. Under the replay profile
(``ANTENNA_JOBS_WORKER_MAX_CACHED_WORKFLOWS=0``) every workflow task of the live run replays too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.models import StartOutcome
from core.errors import Failure, failure
from core.workflow_io import JobWorkflowResult
from tests.helpers.mocked_job import MockedJob, start
from workflows.job_workflow import JobWorkflow

CANCEL_PATHS = ["temporal_cancel", "cancel_signal", "cancelled_row"]
PHASES = ["collecting", "processing"]


async def replays(handle: WorkflowHandle[Any, JobWorkflowResult]) -> str:
    """Replays the closed run's history here and on the worker (a query); its last details."""
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[JobWorkflow], data_converter=pydantic_data_converter)
    outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert outcome.replay_failure is None, f"{handle.id}: {outcome.replay_failure}"
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def closed(handle: WorkflowHandle[Any, JobWorkflowResult]) -> WorkflowExecutionStatus:
    await asyncio.gather(handle.result(), return_exceptions=True)
    status = (await handle.describe()).status
    assert status is not None
    return status


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("path", CANCEL_PATHS)
async def test_a_cancel_in_each_phase_replays(mocked: MockedJob, path: str, phase: str) -> None:
    if phase == "collecting":
        mocked.collect_waits, running = True, mocked.collecting
    else:
        mocked.aggregate_waits, running = True, mocked.aggregating
    handle = await start(mocked)
    await asyncio.wait_for(running.wait(), 30)
    if path == "temporal_cancel":
        await handle.cancel(reason="stop it")
    elif path == "cancel_signal":
        await handle.signal(JobWorkflow.cancel, "cancelled from the UI")
    else:
        mocked.row_cancelling = True

    assert await closed(handle) == WorkflowExecutionStatus.CANCELED
    assert mocked.names().count("revoke_job") == 1
    assert (await replays(handle)).startswith("**cancelled**")


async def test_a_row_cancelled_before_the_run_started_replays(mocked: MockedJob) -> None:
    mocked.start_outcome = StartOutcome.CANCELING
    handle = await start(mocked)

    assert await closed(handle) == WorkflowExecutionStatus.CANCELED
    assert "collect_images" not in mocked.names()
    assert (await replays(handle)).startswith("**cancelled**")


async def test_success_replays(mocked: MockedJob) -> None:
    handle = await start(mocked)

    assert await closed(handle) == WorkflowExecutionStatus.COMPLETED
    assert (await replays(handle)).startswith("**done**")


@pytest.mark.parametrize("activity_name", ["collect_images", "publish_tasks"])
async def test_a_failure_replays(mocked: MockedJob, activity_name: str) -> None:
    mocked.raises[activity_name] = failure(Failure.PIPELINE_NOT_CONFIGURED, "no pipeline")
    mocked.aggregate_waits = activity_name == "publish_tasks"
    handle = await start(mocked)

    assert await closed(handle) == WorkflowExecutionStatus.FAILED
    assert (await replays(handle)).startswith("**failed**")
