"""Test helpers for the job workflow: in-process workers and a simulated ADC worker.

The simulated worker pulls task messages straight from the job's consumer (as the API's
/tasks/ does), stores results with core.inbox.store and only then acks (b"+ACK" to the reply
subject): the order the real API uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from temporalio.client import Client

from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY
from core import inbox
from core.inbox import InboxEntry
from core.schemas import (
    AlgorithmReference,
    BoundingBox,
    ClassificationResponse,
    DetectionResponse,
    PipelineProcessingTask,
    PipelineResultsError,
    PipelineResultsResponse,
    SourceImageResponse,
)
from core.settings import Settings
from tests.helpers.db import NAMES, run_consumer
from worker.app import build_workers
from worker.resources import Resources

T0 = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or raise after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within} s (last value {last!r})")


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


def detections_for(image_id: int) -> int:
    """Synthetic detection count per image: 0, 1 or 2 (0 -> the aggregator writes a marker)."""
    return image_id % 3


def success_result(task: PipelineProcessingTask, pipeline: str) -> PipelineResultsResponse:
    image = task.image_id
    detections = [
        DetectionResponse(
            source_image_id=image,
            bbox=BoundingBox(x1=n, y1=n, x2=n + 10.0, y2=n + 20.0),
            inference_time=0.01,
            algorithm=AlgorithmReference(name="Fake Detector", key=DETECTOR_KEY),
            timestamp=T0,
            classifications=[
                ClassificationResponse(
                    classification=CLASSIFIER_LABELS[n % len(CLASSIFIER_LABELS)],
                    labels=CLASSIFIER_LABELS,
                    scores=[0.6, 0.1, 0.1, 0.1, 0.1],
                    logits=[2.0, 0.1, 0.1, 0.1, 0.1],
                    algorithm=AlgorithmReference(name="Fake Classifier", key=CLASSIFIER_KEY),
                    timestamp=T0,
                )
            ],
        )
        for n in range(detections_for(int(image)))
    ]
    return PipelineResultsResponse(
        pipeline=pipeline,
        total_time=0.05,
        source_images=[SourceImageResponse(id=image, url=task.image_url)],
        detections=detections,
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
                result = success_result(task, self.pipeline)
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
