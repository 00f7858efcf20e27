"""Test helpers for the bridge: Antenna's side of RabbitMQ (Celery's send_task, raw publishes),
a queue of each test's own, a consumer running in the test's loop, and a TCP proxy whose
connections a test can cut to fake a broker outage without touching the shared RabbitMQ.

Isolation is by a unique queue (and exchange) per test, deleted at the end; no test purges or
deletes a queue it did not create.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from bridge.celery_messages import RUN_JOB_TASK
from bridge.consumer import RunJobConsumer, StartJob, celery_queue
from bridge.outcome import BridgeOutcome

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def delete_queue(name: str, url: str = BROKER_URL) -> None:
    with Connection(url) as conn:
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
        _name, messages, _consumers = celery_queue(queue)(conn.channel()).queue_declare(
            passive=True
        )
        return int(messages)


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
    queue: str, start: StartJob, url: str = BROKER_URL, *, wait_ready: bool = True
) -> AsyncIterator[RunningConsumer]:
    """A consumer with short backoffs for tests, stopped (and awaited) when the block ends."""
    consumer = RunJobConsumer(
        url,
        queue,
        start,
        retry_backoff=timedelta(seconds=0.05),
        retry_backoff_max=timedelta(seconds=0.3),
        connect_timeout=timedelta(seconds=2),
    )
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


class TcpProxy:
    """Forwards 127.0.0.1:<port> to RabbitMQ; ``cut()`` drops every connection and refuses
    new ones until ``restore()`` listens on the same port again."""

    def __init__(self, target_port: int = 5672) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()
