"""A job run torn down from outside its own activation issues nothing anywhere (issue 21).

Python closes a coroutine it drops (a run evicted from a worker that stopped, a cache that lost
it) with GeneratorExit, on whatever thread the garbage collector happens to run: often one that
is running another workflow's activation. The job workflow once caught that as an error and went
on to wind down, scheduling its clean-up activity *in the other workflow*: a stray command there
(a non-determinism error when that workflow was replaying) and "coroutine ignored GeneratorExit".
Here the collector's part is played on purpose: a second workflow closes the first one's live
run coroutine from inside its own activation.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import timedelta
from types import CoroutineType

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.helpers import eventually
from tests.helpers.mocked_job import MockedJob, start
from tests.helpers.workflow_faults import WorkflowFaults
from workflows.job_workflow import JobWorkflow


@activity.defn(name="bystander_step")
async def bystander_step() -> str:
    return "done"


@workflow.defn(name="Bystander", sandboxed=False)
class Bystander:
    """Closes the suspended run coroutine of one job's JobWorkflow, as the garbage collector
    would, then runs one activity of its own."""

    @workflow.run
    async def run(self, job_id: int) -> list[str]:
        outcomes = []
        for obj in gc.get_objects():
            if (
                type(obj) is CoroutineType  # no isinstance: gc holds objects that refuse it
                and obj.__qualname__ == "JobWorkflow.run"
                and obj.cr_frame is not None
                and obj.cr_frame.f_locals["inp"].job_id == job_id
            ):
                try:
                    obj.close()
                    outcomes.append("closed")
                except RuntimeError as err:  # "coroutine ignored GeneratorExit"
                    outcomes.append(f"RuntimeError: {err}")
        outcomes.append(
            await workflow.execute_activity(
                bystander_step, start_to_close_timeout=timedelta(seconds=10)
            )
        )
        return outcomes


async def test_a_run_closed_inside_another_workflow_issues_nothing_there(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    job = MockedJob(client=client, queue=f"aj-teardown-{uuid.uuid4().hex[:10]}")
    job.aggregate_waits = True
    async with Worker(
        client, task_queue=job.queue, workflows=[JobWorkflow], activities=job.activities()
    ):
        handle = await start(job)
        await asyncio.wait_for(job.aggregating.wait(), 30)
        queue = f"aj-bystander-{uuid.uuid4().hex[:10]}"
        async with Worker(
            client, task_queue=queue, workflows=[Bystander], activities=[bystander_step]
        ):
            outcomes = await client.execute_workflow(
                Bystander.run,
                mocked_job_id(handle.id),
                id=queue,
                task_queue=queue,
                execution_timeout=timedelta(seconds=30),
            )
            history = await client.get_workflow_handle(queue).fetch_history()
        job.aggregate_waits = False
        await handle.terminate("the test closed its run coroutine")

    assert outcomes == ["closed", "done"]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["bystander_step"]


def mocked_job_id(workflow_id: str) -> int:
    return int(workflow_id.rsplit("-", 1)[1])


_starts: list[int] = []


@activity.defn(name="first_step")
async def first_step() -> str:
    return "first"


@activity.defn(name="other_step")
async def other_step() -> str:
    return "other"


@workflow.defn(name="ChangesOnReplay", sandboxed=False)
class ChangesOnReplay:
    """Schedules another activity each time its run is rebuilt: a workflow that does not replay
    its own history."""

    @workflow.run
    async def run(self) -> str:
        _starts.append(1)
        step = first_step if len(_starts) == 1 else other_step
        await workflow.execute_activity(step, start_to_close_timeout=timedelta(seconds=10))
        return await workflow.execute_activity(
            first_step, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_a_non_determinism_error_is_caught_by_the_fault_watch(
    temporal_env: WorkflowEnvironment, workflow_faults: WorkflowFaults
) -> None:
    """The guard itself: the non-determinism error that a replay of this run meets (every
    workflow task replays: no cache) is seen in the log, which fails any test it happens in."""
    client = temporal_env.client
    queue = f"aj-nde-{uuid.uuid4().hex[:10]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ChangesOnReplay],
        activities=[first_step, other_step],
        max_cached_workflows=0,
    ):
        handle = await client.start_workflow(
            ChangesOnReplay.run, id=queue, task_queue=queue, execution_timeout=timedelta(seconds=60)
        )

        async def seen() -> bool:
            return bool(workflow_faults.found)

        await eventually(seen, within=30)
        found = workflow_faults.take()
        await handle.terminate("non-deterministic on purpose")
    assert any("nondetermin" in line.lower() for line in found), found
    # Its workflow task kept failing until the terminate: those lines arrive buffered, and are
    # this test's, not the next one's.
    await asyncio.sleep(1)
    workflow_faults.take()
