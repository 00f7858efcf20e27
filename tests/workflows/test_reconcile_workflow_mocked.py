"""The reconcile workflow with its two activities mocked by name: repair, then leftovers, with the
Schedule's input; a repair that fails for good ends the run before leftovers are touched. The
real activities are checked by test_reconcile.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError

from activities.reconcile.models import (
    JobsReport,
    LeftoversReport,
    ReconcileInput,
    ReconcileReport,
    RepairedJob,
)
from core.states import JobState
from tests.helpers.mocked_job import MockedJob, mocked_fixture
from workflows.reconcile_workflow import ReconcileWorkflow

REPAIRED = RepairedJob(
    job_id=7, from_status=JobState.STARTED, to_status=JobState.FAILURE, reason="workflow closed"
)
JOBS = JobsReport(checked=3, running=1, repaired=[REPAIRED], started=[8])
LEFTOVERS = LeftoversReport(streams_checked=2, streams_removed=["job_7"], tokens_removed=1)


@dataclass
class MockedReconcile(MockedJob):
    """The reconcile activities' stand-ins (none of the job activities)."""

    repair_fails: bool = False

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="reconcile_jobs")
        async def reconcile_jobs(inp: ReconcileInput) -> JobsReport:
            self._called("reconcile_jobs", inp)
            if self.repair_fails:
                raise ApplicationError("Temporal's visibility is off", non_retryable=True)
            return JOBS

        @activity.defn(name="remove_leftovers")
        async def remove_leftovers(inp: ReconcileInput) -> LeftoversReport:
            self._called("remove_leftovers", inp)
            return LEFTOVERS

        return [reconcile_jobs, remove_leftovers]


reconcile = mocked_fixture("reconcile", MockedReconcile, ReconcileWorkflow)


async def run(job: MockedReconcile) -> WorkflowHandle[Any, ReconcileReport]:
    return await job.client.start_workflow(
        ReconcileWorkflow.run,
        ReconcileInput(page_size=50),
        id=f"reconcile-mocked-{uuid.uuid4().hex[:10]}",
        task_queue=job.queue,
        result_type=ReconcileReport,
        execution_timeout=timedelta(seconds=60),
    )


async def test_repair_then_leftovers_make_the_report(reconcile: MockedReconcile) -> None:
    report = await (await run(reconcile)).result()

    assert report == ReconcileReport(jobs=JOBS, leftovers=LEFTOVERS)
    assert reconcile.names() == ["reconcile_jobs", "remove_leftovers"]
    assert {inp.page_size for _, inp in reconcile.calls} == {50}


async def test_a_repair_that_fails_for_good_ends_the_run_before_leftovers(
    reconcile: MockedReconcile,
) -> None:
    reconcile.repair_fails = True
    handle = await run(reconcile)

    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ActivityError)
    assert reconcile.names() == ["reconcile_jobs"]
