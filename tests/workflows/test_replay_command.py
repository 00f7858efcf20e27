"""``antenna-jobs replay`` against the session's Temporal dev server with a job running: the
installed code passes; a workflow module with one activity call moved fails, naming the run."""

from __future__ import annotations

import asyncio

from core.settings import Settings
from job_control.replay import replay_runs, runs_query
from tests.helpers import eventually
from tests.helpers.mocked_job import MockedJob, start
from tests.helpers.processes import cli_env, invoke
from tests.helpers.workflow_faults import WorkflowFaults
from tests.workflows.test_recorded_histories import ResetAfterCollect


async def test_replay_passes_on_the_installed_code_and_names_a_run_a_change_breaks(
    mocked: MockedJob, settings: Settings, workflow_faults: WorkflowFaults
) -> None:
    mocked.aggregate_waits = True
    handle = await start(mocked)
    await asyncio.wait_for(mocked.aggregating.wait(), 30)

    done = await invoke(cli_env(settings), "replay", "--since", "1h")
    assert done.exit_code == 0, done.output
    assert "runs on the installed code: OK" in done.output

    report = await replay_runs(mocked.client, [ResetAfterCollect])
    broken = {f.workflow_id for f in report.failures}
    assert handle.id in broken
    assert all("nondetermin" in f.error.lower() for f in report.failures)

    refused = await invoke(cli_env(settings), "replay", "--since", "soon")
    assert refused.exit_code != 0 and "not a duration" in refused.output

    async def logged() -> bool:  # the failed replays' own log lines, taken on purpose
        return bool(workflow_faults.found)

    await eventually(logged, within=10)
    await handle.terminate("test over")
    await asyncio.sleep(0.5)
    workflow_faults.take()


def test_the_query_names_our_workflow_types_and_the_window() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    query = runs_query(["JobWorkflow", "SyncJobWorkflow"], timedelta(hours=2), now)
    assert query == (
        '(WorkflowType = "JobWorkflow" OR WorkflowType = "SyncJobWorkflow") AND'
        ' (ExecutionStatus = "Running" OR CloseTime > "2026-12-07T10:00:00Z")'
    )
