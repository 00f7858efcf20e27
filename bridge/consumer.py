"""Consuming Antenna's ``run_job`` Celery messages from its RabbitMQ queue (``jobs``).

kombu is synchronous and a py-amqp connection is not thread-safe, so one thread owns the
connection: it receives each message, hands ``start(job_id, task_id)`` to the asyncio loop
(``run_coroutine_threadsafe``) and goes on draining; between drains it acks the messages whose
start returned (persist before ack), and requeues those whose start raised once their backoff
is over (a transient failure: Temporal or Postgres unreachable; held unacked meanwhile, so never
lost and never retried hot). A malformed message, or one of another task, can never succeed: it
is logged as an error and acked. A broker outage (or a refused declaration) is retried with
backoff, forever; ``stop()`` or cancelling ``run()`` ends it within a poll interval.

The queue is declared exactly as Celery declares a queue it routes to, so the declaration never
clashes with Antenna's own (RabbitMQ refuses a redeclaration with other arguments).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import KombuError
from kombu.message import Message
from kombu.messaging import Consumer
from kombu.utils.url import maybe_sanitize_url

from bridge.celery_messages import (
    JSON_CONTENT_TYPE,
    MalformedTaskMessage,
    RunJobRequest,
    UnexpectedTask,
    run_job_request,
)
from bridge.outcome import BridgeOutcome
from core import tracing
from core.settings import AntennaSettings

log = logging.getLogger("antenna_jobs.bridge")

StartJob = Callable[[int, str], Awaitable[BridgeOutcome]]

# Antenna's broker transport options use the same heartbeat: a dead connection is seen in ~1 min.
_HEARTBEAT = 30.0
# After stop(), starts in flight may finish (and be acked) for this long; the rest are
# redelivered by the broker (starting a job twice joins its one run).
_STOP_GRACE = 1.0


def celery_queue(name: str) -> Queue:
    """The queue as Celery declares one it routes to (``app.amqp.Queues.new_missing``): a
    durable direct exchange and a durable queue, both named ``name``, bound by ``name``."""
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def backoff(failures: int, base: timedelta, cap: timedelta) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure: base, doubled, capped."""
    seconds = base.total_seconds() * 2 ** max(failures - 1, 0)
    return float(min(seconds, cap.total_seconds()))


@dataclass
class _InFlight:
    message: Message
    request: RunJobRequest
    future: concurrent.futures.Future[BridgeOutcome]


@dataclass
class _Held:
    """A message whose start failed, kept unacked until its backoff is over, then requeued."""

    message: Message
    request: RunJobRequest
    until: float


class RunJobConsumer:
    """Runs ``start`` once per run_job message of ``queue``; see the module docstring."""

    def __init__(
        self,
        broker_url: str,
        queue: str,
        start: StartJob,
        *,
        prefetch: int = 10,
        retry_backoff: timedelta = timedelta(seconds=1),
        retry_backoff_max: timedelta = timedelta(seconds=30),
        connect_timeout: timedelta = timedelta(seconds=5),
        poll_interval: float = 0.1,
    ) -> None:
        self._url = broker_url
        self._queue = queue
        self._start = start
        self._prefetch = prefetch
        self._backoff = (retry_backoff, retry_backoff_max)
        self._connect_timeout = connect_timeout.total_seconds()
        self._poll = poll_interval
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._in_flight: list[_InFlight] = []
        self._held: list[_Held] = []
        self._start_failures = 0
        # Consecutive failed connections (or declarations): reset once consuming.
        self._broker_failures = 0

    @classmethod
    def from_settings(cls, settings: AntennaSettings, start: StartJob) -> RunJobConsumer:
        if settings.broker_url is None:
            raise ValueError("ANTENNA_JOBS_ANTENNA_BROKER_URL is not set: nothing to consume")
        return cls(
            settings.broker_url,
            settings.jobs_queue,
            start,
            prefetch=settings.prefetch,
            retry_backoff=settings.retry_backoff,
            retry_backoff_max=settings.retry_backoff_max,
            connect_timeout=settings.connect_timeout,
        )

    @property
    def where(self) -> str:
        return f"queue {self._queue!r} on {maybe_sanitize_url(self._url)}"

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Consume until stop() or until cancelled; either way the thread ends first.

        ``ready`` is set each time the consumer is registered with the broker (again after a
        reconnect).
        """
        self._loop = asyncio.get_running_loop()
        self._ready = ready
        thread = asyncio.ensure_future(asyncio.to_thread(self._run_thread))
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            self._stop.set()
            await thread
            raise

    # --- everything below runs in the consumer thread ---

    def _run_thread(self) -> None:
        while not self._stop.is_set():
            conn = Connection(
                self._url, connect_timeout=self._connect_timeout, heartbeat=_HEARTBEAT
            )
            recoverable = (
                OSError,
                KombuError,
                *conn.connection_errors,
                *conn.channel_errors,
            )
            try:
                conn.connect()
                self._consume(conn)
            except recoverable as err:
                self._broker_failures += 1
                delay = backoff(self._broker_failures, *self._backoff)
                log.warning(
                    "broker error on %s (%s: %s); reconnecting in %.1f s",
                    self.where,
                    type(err).__name__,
                    err,
                    delay,
                )
                self._stop.wait(delay)
            finally:
                # Messages of a lost channel are redelivered by the broker; starts still
                # running finish on their own, and their results are ignored.
                self._in_flight.clear()
                self._held.clear()
                conn.release()

    def _consume(self, conn: Connection) -> None:
        consumer = Consumer(
            conn.channel(),
            queues=[celery_queue(self._queue)],
            on_message=self._on_message,
            on_decode_error=self._on_undecodable,
            accept=[JSON_CONTENT_TYPE],
            prefetch_count=self._prefetch,
        )
        with consumer:
            self._broker_failures = 0
            if self._ready is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._ready.set)
            log.info("consuming run_job messages from %s", self.where)
            last_beat = 0.0
            while not self._stop.is_set():
                self._settle()
                with contextlib.suppress(TimeoutError):  # nothing arrived within the poll
                    conn.drain_events(timeout=self._poll)
                if time.monotonic() - last_beat >= 1.0:
                    conn.heartbeat_check()
                    last_beat = time.monotonic()
            self._finish()

    def _on_message(self, message: Message) -> None:
        try:
            request = run_job_request(
                message.headers,
                message.body,
                message.content_type,
                message.content_encoding,
            )
        except MalformedTaskMessage as err:
            self._drop(message, err)
            return
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._call_start(request), self._loop)
        self._in_flight.append(_InFlight(message, request, future))

    def _on_undecodable(self, message: Message, exc: Exception) -> None:
        self._drop(message, MalformedTaskMessage(f"undecodable body ({exc})"))

    def _drop(self, message: Message, err: MalformedTaskMessage) -> None:
        what = "not a run_job message" if isinstance(err, UnexpectedTask) else "malformed"
        log.error(
            "dropping a message from %s (%s): %s [delivery %s, headers %s]",
            self.where,
            what,
            err.reason,
            message.delivery_tag,
            _short(message.headers),
        )
        message.ack()

    async def _call_start(self, request: RunJobRequest) -> BridgeOutcome:
        # The job run's trace starts at Antenna's message (the start's span is its child).
        attributes = {**tracing.job_attributes(request.job_id), "celery.task_id": request.task_id}
        with tracing.span("antenna_jobs.bridge.run_job", attributes):
            return await self._start(request.job_id, request.task_id)

    def _settle(self) -> None:
        """Ack what started, hold what failed, requeue what has waited long enough."""
        now = time.monotonic()
        running: list[_InFlight] = []
        for item in self._in_flight:
            if not item.future.done():
                running.append(item)
            elif not item.future.cancelled():
                self._settle_one(item, now)
        self._in_flight = running
        waiting: list[_Held] = []
        for held in self._held:
            if now >= held.until:
                held.message.requeue()
            else:
                waiting.append(held)
        self._held = waiting

    def _settle_one(self, item: _InFlight, now: float) -> None:
        job_id, task_id = item.request.job_id, item.request.task_id
        error = item.future.exception()
        if error is None:
            item.message.ack()
            self._start_failures = 0
            log.info("run_job %s for job %s: %s", task_id, job_id, item.future.result())
            return
        self._start_failures += 1
        delay = backoff(self._start_failures, *self._backoff)
        log.warning(
            "run_job %s for job %s failed (%s: %s); requeued in %.1f s",
            task_id,
            job_id,
            type(error).__name__,
            error,
            delay,
        )
        self._held.append(_Held(item.message, item.request, now + delay))

    def _finish(self) -> None:
        """On stop: let starts in flight finish briefly, then give everything else back."""
        deadline = time.monotonic() + _STOP_GRACE
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
            self._settle()
        for item in self._in_flight:
            item.future.cancel()
        for held in self._held:
            held.message.requeue()
        self._in_flight.clear()
        self._held.clear()


def _short(headers: dict[str, Any] | None, limit: int = 300) -> str:
    text = repr({k: v for k, v in (headers or {}).items() if k in ("task", "id", "argsrepr")})
    return text if len(text) <= limit else text[:limit] + "..."
