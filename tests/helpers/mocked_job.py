"""The async ML job workflow with every activity mocked by name, on the session's Temporal dev
server: stand-ins registered under the real activity names, taking and returning the real input
and output models (as in temporalio/samples-python ``tests/hello/hello_activity_test.py``). What
they record is what the workflow asked for, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
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
from core.settings import WorkerSettings
from core.states import JobState
from core.workflow_io import JobWorkflowInput, JobWorkflowResult
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
    # Aggregation (collect) runs until cancelled, heartbeating as the real one does while it
    # waits; or until row_cancelling is set, when it fails as the real one does on seeing it.
    aggregate_waits: bool = False
    collect_waits: bool = False
    # What start_job finds (CANCELING: the row was cancelled before the run started).
    start_outcome: StartOutcome = StartOutcome.STARTED
    # Activity name -> the error its stand-in raises.
    raises: dict[str, BaseException] = field(default_factory=dict)
    # What check_cancel finds in the job row.
    row_cancelling: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    aggregating: asyncio.Event = field(default_factory=asyncio.Event)
    collecting: asyncio.Event = field(default_factory=asyncio.Event)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    def _called(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.raises:
            raise self.raises[name]

    async def _wait_while(self, waits: Callable[[], bool]) -> None:
        while waits():
            if self.row_cancelling:
                raise failure(Failure.JOB_CANCELLED, "the job row is CANCELING")
            activity.heartbeat()
            await asyncio.sleep(0.05)  # cancelled here once a heartbeat learns of it

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
                outcome=self.start_outcome, status=JobState.PENDING, project_id=1, config=config
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
            self.collecting.set()
            await self._wait_while(lambda: self.collect_waits)
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
            await self._wait_while(lambda: self.aggregate_waits)
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
        # The replay profile's setting too: every workflow task replays the run from its start.
        max_cached_workflows=WorkerSettings().max_cached_workflows,
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
