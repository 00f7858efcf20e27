"""The async ML job workflow with every activity mocked by name, on the session's Temporal dev
server: stand-ins registered under the real activity names, taking and returning the real input
and output models (as in temporalio/samples-python ``tests/hello/hello_activity_test.py``). What
they record is what the workflow asked for, in order. The other job workflows add their own
stand-ins to these (subclasses of MockedJob, tests/helpers/mocked_workflows.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
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
from core.settings import WorkerSettings
from core.states import JobState, JobType
from core.workflow_io import JobWorkflowInput, JobWorkflowResult, WorkflowProgress
from tests.helpers.db import NAMES
from workflows.job_workflow import JobWorkflow

THRESHOLD = 0.5


@dataclass
class MockedJob:
    """The activities of one async ML job, mocked: what they answer and what they were asked."""

    client: Client
    queue: str
    # The workflow the stand-ins run (mocked_worker sets it).
    workflow: Any = JobWorkflow
    total: int = 10
    counters: AggregateCounters = field(default_factory=AggregateCounters)
    stalled: bool = False
    # Aggregation (collect) runs until cancelled, heartbeating as the real one does while it
    # waits; or until row_cancelling is set, when it fails as the real one does on seeing it.
    aggregate_waits: bool = False
    collect_waits: bool = False
    # What start_job finds (CANCELING: the row was cancelled before the run started).
    start_outcome: StartOutcome = StartOutcome.STARTED
    start_status: JobState = JobState.PENDING
    job_type: JobType = JobType.ML
    # What finalize_job answers (None: the status the counters say, written).
    finalized: FinalizeResult | None = None
    # Activity name -> the error its stand-in raises.
    raises: dict[str, BaseException] = field(default_factory=dict)
    # What check_cancel finds in the job row.
    row_cancelling: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    aggregating: asyncio.Event = field(default_factory=asyncio.Event)
    collecting: asyncio.Event = field(default_factory=asyncio.Event)
    # Stand-ins that run until cancelled (``_held``); set when each started; those a cancel
    # stopped.
    hold: set[str] = field(default_factory=set)
    started: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    stopped: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    def started_as(self) -> dict[str, Any]:
        """What start_job answers (both of the workflow's queues are this job's one)."""
        config = JobConfig(
            long_task_queue=self.queue,
            heartbeat_timeout=timedelta(seconds=1),
            failure_threshold=THRESHOLD,
            short_timeout=timedelta(seconds=10),
        )
        return {
            "outcome": self.start_outcome,
            "status": self.start_status,
            "project_id": 1,
            "config": config,
            "job_type": self.job_type,
        }

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

    async def _held(self, name: str, arg: Any) -> None:
        """A long stand-in's start: recorded, then running while it is in ``hold``."""
        self._called(name, arg)
        self.started[name].set()
        try:
            await self._wait_while(lambda: name in self.hold)
        except asyncio.CancelledError:
            self.stopped.append(name)
            raise

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="start_job")
        async def start_job(inp: StartInput) -> StartResult:
            self._called("start_job", inp)
            return StartResult(**self.started_as())

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
            if self.finalized is not None:
                return self.finalized
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


def new_queue() -> str:
    return f"aj-mocked-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def mocked_worker(job: MockedJob, workflow: type) -> AsyncIterator[MockedJob]:
    """A worker running ``workflow`` with the job's stand-ins on the job's queue (both of the
    workflow's queues are this one)."""
    job.workflow = workflow
    async with Worker(
        job.client,
        task_queue=job.queue,
        workflows=[workflow],
        activities=job.activities(),
        # The replay profile's setting too: every workflow task replays the run from its start.
        max_cached_workflows=WorkerSettings().max_cached_workflows,
        # Heartbeats sent at once (not every 0.8 s of the 1 s timeout): a cancel reaches a
        # waiting stand-in within 0.1 s.
        max_heartbeat_throttle_interval=timedelta(seconds=0.1),
    ):
        yield job


def mocked_fixture(name: str, job_class: type[MockedJob], workflow: type) -> Any:
    """A fixture ``name``: a ``job_class`` and a worker running ``workflow`` with its stand-ins
    on a queue of its own."""

    @pytest_asyncio.fixture(name=name)
    async def fixture(temporal_env: WorkflowEnvironment) -> AsyncIterator[MockedJob]:
        async with mocked_worker(job_class(temporal_env.client, new_queue()), workflow) as job:
            yield job

    return fixture


mocked = mocked_fixture("mocked", MockedJob, JobWorkflow)


async def start(job: MockedJob) -> WorkflowHandle[Any, JobWorkflowResult]:
    job_id = uuid.uuid4().int % 10**12
    return await job.client.start_workflow(
        job.workflow.run,
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


async def job_failed(handle: WorkflowHandle[Any, JobWorkflowResult]) -> ApplicationError:
    """The error the run failed with, having failed its job."""
    cause = await ended_with(handle)
    assert isinstance(cause, ApplicationError) and cause.type == Failure.JOB_FAILED
    return cause


async def progress(handle: WorkflowHandle[Any, JobWorkflowResult]) -> WorkflowProgress:
    return await handle.query("progress", result_type=WorkflowProgress)


async def assert_revoked(job: MockedJob, handle: WorkflowHandle[Any, JobWorkflowResult]) -> None:
    """The cancel path's end: CANCELING, then REVOKED once and last, the run closed as Canceled,
    the job never failed."""
    assert isinstance(await ended_with(handle), CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    names = job.names()
    assert names.index("mark_canceling") < names.index("revoke_job")
    assert names.count("revoke_job") == 1 and names[-1] == "revoke_job"
    assert "fail_job" not in names
    state = await progress(handle)
    assert (state.phase, state.status) == ("cancelled", JobState.REVOKED)
