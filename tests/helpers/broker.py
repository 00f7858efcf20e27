"""Test helpers for the bridge: Antenna's side of RabbitMQ (Celery's send_task, raw publishes),
a queue of each test's own, a consumer running in the test's loop (a broker outage is faked with
helpers.processes.TcpProxy in front of RabbitMQ, never by touching the shared one).

Isolation is by a unique queue (and exchange) per test, deleted at the end; no test purges or
deletes a queue it did not create.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer

from bridge import queues
from bridge.celery_messages import RUN_JOB_TASK
from bridge.consumer import OnDeadLetter, OnReport, RunJobConsumer, StartJob, celery_queue
from bridge.report import DeadLetter
from core import backoff
from core.bridge_outcome import BridgeOutcome
from storage.bridge_reports import BridgeReport

BROKER_PORT = 5672


def broker_url(port: int = BROKER_PORT) -> str:
    """The shared RabbitMQ's URL (another port: a TcpProxy in front of it)."""
    return f"amqp://guest:guest@127.0.0.1:{port}//"


BROKER_URL = broker_url()
# RabbitMQ's management API (its plugin, enabled by .ci/run), for the bridge to name consumers.
MANAGEMENT_URL = os.environ.get(
    "ANTENNA_JOBS_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
)


# running_consumer's backoffs (retry queues are named by their delay).
TEST_BACKOFF = (timedelta(seconds=0.05), timedelta(seconds=0.3))


def delete_queue(name: str, url: str = BROKER_URL, delays_ms: tuple[int, ...] = ()) -> None:
    """The queue, its Celery exchange, and the bridge's dead-letter and retry queues for it
    (retry queues of other delays remove themselves a minute after their last use)."""
    ours = [queues.dead_letter_queue(name)]
    base, cap = (t.total_seconds() for t in TEST_BACKOFF)
    test_delays = {int(backoff.delay(n, base, cap) * 1000) for n in range(1, 8)}
    ours += [queues.retry_queue(name, ms) for ms in sorted(test_delays | set(delays_ms))]
    with Connection(url) as conn:
        for queue in ours:
            with contextlib.suppress(Exception):
                conn.channel().queue_delete(queue)
        channel = conn.channel()
        with contextlib.suppress(Exception):
            celery_queue(name)(channel).delete()
        with contextlib.suppress(Exception):
            Exchange(name, type="direct")(channel).delete()


@pytest.fixture(name="queue")
def queue_fixture() -> Iterator[str]:
    """A RabbitMQ queue name of this test's own; the queue and its exchange go at the end."""
    name = f"aj-test-bridge-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        delete_queue(name)


def antenna_app(url: str = BROKER_URL, **conf: Any) -> Celery:
    app = Celery(broker=url, set_as_current=False)
    app.conf.update(conf)
    return app


def send_task(queue: str, task: str, url: str = BROKER_URL, **kwargs: Any) -> str:
    """Send as Antenna does (``app.send_task(name, kwargs=..., queue=...)``); the task id.
    ``compression="gzip"`` etc. go to the app's config (Antenna compresses with gzip)."""
    conf = {f"task_{k}": kwargs.pop(k) for k in ("compression",) if k in kwargs}
    app = antenna_app(url, **conf)
    try:
        return str(app.send_task(task, kwargs=kwargs, queue=queue).id)
    finally:
        app.close()


async def send_run_job(queue: str, job_id: Any, **conf: Any) -> str:
    return await asyncio.to_thread(send_task, queue, RUN_JOB_TASK, job_id=job_id, **conf)


def publish_raw(
    queue: str,
    body: Any,
    *,
    headers: dict[str, Any] | None = None,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
) -> None:
    """A message with exactly this body and these headers, to the queue's Celery exchange."""
    with Connection(BROKER_URL) as conn:
        producer = Producer(conn.channel())
        target = celery_queue(queue)
        producer.publish(
            body,
            exchange=target.exchange,
            routing_key=queue,
            declare=[target],
            headers=headers or {},
            content_type=content_type,
            content_encoding=content_encoding,
            serializer=None if isinstance(body, bytes | str) else "json",
        )


def queue_depth(queue: str) -> int:
    """Ready messages in the queue (unacked ones are not counted: stop the consumer first)."""
    with Connection(BROKER_URL) as conn:
        return queues.figures(conn.channel(), queue).messages


def dead_letter_depth(queue: str) -> int:
    """Messages in the bridge's dead-letter queue for ``queue`` (0 if it does not exist)."""
    with Connection(BROKER_URL) as conn:
        try:
            return queues.figures(conn.channel(), queues.dead_letter_queue(queue)).messages
        except Exception:
            return 0


@dataclass
class Hooks:
    """on_dead_letter and on_report callbacks that record what they were given."""

    dead: list[DeadLetter] = field(default_factory=list)
    reports: list[BridgeReport] = field(default_factory=list)

    async def on_dead_letter(self, letter: DeadLetter) -> None:
        self.dead.append(letter)

    async def on_report(self, report: BridgeReport) -> None:
        self.reports.append(report)


@dataclass
class Recorder:
    """A start callback that records its calls and fails its first ``fails`` calls."""

    fails: int = 0
    outcome: BridgeOutcome = BridgeOutcome.STARTED
    calls: list[tuple[int, str]] = field(default_factory=list)

    async def __call__(self, job_id: int, task_id: str) -> BridgeOutcome:
        self.calls.append((job_id, task_id))
        if len(self.calls) <= self.fails:
            raise ConnectionError("Temporal unreachable (simulated)")
        return self.outcome


@dataclass
class RunningConsumer:
    consumer: RunJobConsumer
    task: asyncio.Task[None]
    ready: asyncio.Event


@contextlib.asynccontextmanager
async def running_consumer(
    queue: str,
    start: StartJob,
    url: str = BROKER_URL,
    *,
    wait_ready: bool = True,
    hooks: Hooks | None = None,
    **options: Any,
) -> AsyncIterator[RunningConsumer]:
    """A consumer with short backoffs for tests (``options`` override RunJobConsumer's), stopped
    (and awaited) when the block ends."""
    on_dead_letter: OnDeadLetter | None = hooks.on_dead_letter if hooks else None
    on_report: OnReport | None = hooks.on_report if hooks else None
    settings: dict[str, Any] = {
        "retry_backoff": TEST_BACKOFF[0],
        "retry_backoff_max": TEST_BACKOFF[1],
        "connect_timeout": timedelta(seconds=2),
        "report_interval": timedelta(seconds=0.2),
        "on_dead_letter": on_dead_letter,
        "on_report": on_report,
    }
    consumer = RunJobConsumer(url, queue, start, **(settings | options))
    ready = asyncio.Event()
    task = asyncio.create_task(consumer.run(ready=ready))
    try:
        if wait_ready:
            await asyncio.wait_for(ready.wait(), 15)
        yield RunningConsumer(consumer, task, ready)
    finally:
        consumer.stop()
        if not task.done():
            await asyncio.wait_for(task, 15)
