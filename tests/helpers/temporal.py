"""Temporal for tests: in-process workers, job workflow handles, what the server knows of a
running activity, and a simulated ADC worker.

The simulated worker pulls task messages straight from the job's consumer (as the API's
/tasks/ does), stores results with storage.inbox.store and only then acks (b"+ACK" to the reply
subject): the order the real API uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from activities.reconcile.models import ReconcileInput, ReconcileReport
from core import naming
from core.naming import Names
from core.schemas import (
    PipelineProcessingTask,
    PipelineResultsError,
)
from core.settings import Settings
from core.states import JobState
from core.workflow_io import JobWorkflowResult
from job_control.actions import JobActions
from storage import inbox
from storage.inbox import InboxEntry
from storage.pool import Pool
from tests.helpers import eventually
from tests.helpers.db import NAMES, get_job, job_logs, run_consumer
from tests.helpers.jobs import adc_result
from worker.app import build_workers
from worker.resources import Resources

TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


@contextlib.asynccontextmanager
async def running_workers(client: Client, settings: Settings) -> AsyncIterator[Resources]:
    """build_workers for this test's settings (own task queues), running until the block ends."""
    resources = await Resources.open(settings, run_migrations=False)
    workers = build_workers(client, settings, resources)
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield resources
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*runs, return_exceptions=True)
        await resources.close()


async def run_to_end(
    pool: Pool, client: Client, settings: Settings, job_id: int
) -> JobWorkflowResult:
    """The job run (JobActions.run) by this process's workers, to its workflow's result."""
    async with running_workers(client, settings):
        await JobActions(pool, client, settings).run(job_id)
        return await job_handle(client, job_id).result()


async def run_to_failure(pool: Pool, client: Client, settings: Settings, job_id: int) -> list[str]:
    """The job run as run_to_end fails: its row FAILURE and finished; its ERROR log lines."""
    with pytest.raises(WorkflowFailureError):
        await run_to_end(pool, client, settings, job_id)
    done = await get_job(pool, job_id)
    assert done.status == JobState.FAILURE and done.finished_at is not None
    return [r["message"] for r in await job_logs(pool, job_id) if r["level"] == "ERROR"]


async def run_reconcile(client: Client, settings: Settings) -> ReconcileReport:
    """One reconcile pass (the workflow the schedule starts), run now on the test's queue."""
    return await client.execute_workflow(
        naming.RECONCILE_WORKFLOW,
        ReconcileInput(),
        id=f"reconcile-test-{uuid.uuid4().hex[:8]}",
        task_queue=settings.jobs.task_queue,
        result_type=ReconcileReport,
    )


@dataclass
class SimulatedAdcWorker:
    """Processes a job's tasks like the ADC worker would, through the same inbox the API fills."""

    nc: NatsClient
    pool: Any
    job_id: int
    pipeline: str
    fails: Callable[[int], bool] = lambda _image: False
    duplicates: bool = False
    batch_size: int = 100
    # Images whose task is received but never answered nor acked (redelivery / max_deliver).
    ignores: Callable[[int], bool] = lambda _image: False
    # Error results that name no image (the aggregator must find it from the reply subject).
    anonymous_errors: bool = False
    acked: int = 0
    seen: list[int] = field(default_factory=list)
    _sub: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        js = self.nc.jetstream()
        try:
            await self._pull(js, stop)
        finally:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()

    async def _pull(self, js: Any, stop: asyncio.Event) -> None:
        sub = None
        while not stop.is_set():
            if sub is None:
                try:
                    consumer = await run_consumer(self.pool, self.job_id)
                    if consumer is None:
                        raise NotFoundError
                    sub = self._sub = await js.pull_subscribe_bind(
                        consumer, NAMES.stream(self.job_id)
                    )
                except NotFoundError:
                    await asyncio.sleep(0.05)
                    continue
            try:
                msgs = await sub.fetch(self.batch_size, timeout=0.2)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except NotFoundError:
                sub = None
                continue
            await self._answer(msgs)

    async def _answer(self, msgs: list[Any]) -> None:
        entries: list[InboxEntry] = []
        replies: list[str] = []
        for msg in msgs:
            task = PipelineProcessingTask.model_validate_json(msg.data)
            image = int(task.image_id)
            self.seen.append(image)
            if self.ignores(image):
                continue
            if self.fails(image):
                named = None if self.anonymous_errors else task.image_id
                result: Any = PipelineResultsError(error="simulated", image_id=named)
            else:
                result = adc_result(task, self.pipeline)
            entry = InboxEntry(
                image_id=None if self.anonymous_errors and self.fails(image) else image,
                reply_subject=msg.reply,
                is_error=isinstance(result, PipelineResultsError),
                payload=result.model_dump_json(),
            )
            entries += [entry, entry] if self.duplicates else [entry]
            replies.append(msg.reply)
        async with self.pool.connection() as conn:
            await inbox.store(conn, self.job_id, entries)
        for reply in replies:
            await self.nc.publish(reply, b"+ACK")
        await self.nc.flush()
        self.acked += len(replies)


@contextlib.asynccontextmanager
async def simulated_worker(worker: SimulatedAdcWorker) -> AsyncIterator[SimulatedAdcWorker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


def job_handle(
    client: Client, job_id: int, names: Names = NAMES
) -> WorkflowHandle[Any, JobWorkflowResult]:
    """The handle of the job's workflow (any of its job types: all return a JobWorkflowResult);
    ``names``: the deployment's (settings.jobs.names) when it has a name prefix."""
    return client.get_workflow_handle(names.workflow_id(job_id), result_type=JobWorkflowResult)


async def heartbeat_details(client: Client, job_id: int, activity: str) -> dict[str, Any] | None:
    """The last heartbeat details the server holds for the job's running ``activity``."""
    desc = await job_handle(client, job_id).describe()
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == activity and pending.heartbeat_details.payloads:
            value = json.loads(pending.heartbeat_details.payloads[0].data)
            return value if isinstance(value, dict) else None
    return None


async def wait_activity(
    handle: WorkflowHandle[Any, Any], activity: str, within: float = 60.0
) -> None:
    """Until the run has ``activity`` pending (scheduled or running): what a cancel test waits
    for before it cancels."""

    async def pending() -> bool:
        desc = await handle.describe()
        return any(
            a.activity_type.name == activity for a in desc.raw_description.pending_activities
        )

    await eventually(pending, within=within)
