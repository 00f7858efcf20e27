"""Consuming Antenna's ``run_job`` Celery messages from its RabbitMQ queue (``jobs``).

kombu is synchronous and a py-amqp connection is not thread-safe, so one thread owns the
connection: it receives each message, hands ``start(job_id, task_id)`` to the asyncio loop
(``run_coroutine_threadsafe``) and goes on draining; between drains it acks the messages whose
start returned (persist before ack).

A start that raised is never held in the prefetch window: a copy goes to a retry queue that
gives it back after its backoff (bridge/queues.py), then the original is acked (publisher
confirms: the copy is on the broker first). A failure that may pass (bridge/failures.py) is
retried for as long as it takes; any other is retried ``max_attempts`` times in all, then the
message is dead-lettered: kept in ``{jobs}.dead-letter`` with its reason, one ERROR log line,
one line in the job's log (``on_dead_letter``). A malformed message, or one of another task,
can never succeed: it is dead-lettered at once.

Every ``report_interval`` the thread reads the jobs queue's and the dead-letter queue's figures
(passive declarations) and hands a BridgeReport to ``on_report``; another consumer on the jobs
queue (a leftover Antenna worker would take Runs) is logged as a warning when it appears. A
broker outage (or a refused declaration) is retried with backoff (core/backoff.py), forever;
``stop()`` or cancelling ``run()`` ends it within a poll interval.

The reconnect loop is ours, not kombu's ``ConsumerMixin`` (kombu 5.7), which falls short three
ways: while the broker is down it waits in ``Connection.ensure_connection`` without a callback,
so ``should_stop`` is not looked at and a stop waits for the broker to come back; those waits
are ensure_connection's defaults (2 s, 4 s, 6 s... 30 s), not the configured backoff; and a
failure once connected (a refused declaration, a lost connection) is only logged by ``run()``
and retried once a second, with no backoff and no hook for the ``connected=False`` report.
Overriding ``establish_connection`` and ``run()`` to mend that would leave it only the drain
loop of ``consume()``, which checks heartbeats only when a drain times out (never while
messages keep coming).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from kombu.connection import Connection
from kombu.exceptions import KombuError
from kombu.message import Message
from kombu.messaging import Consumer, Producer
from kombu.utils.url import maybe_sanitize_url

from bridge import management, queues
from bridge.celery_messages import (
    JSON_CONTENT_TYPE,
    MalformedTaskMessage,
    RunJobRequest,
    UnexpectedTask,
    run_job_request,
)
from bridge.failures import describe, is_transient
from bridge.queues import celery_queue
from bridge.report import BridgeReport, DeadLetter
from core import backoff, tracing
from core.bridge_outcome import BridgeOutcome
from core.settings import AntennaSettings

log = logging.getLogger("antenna_jobs.bridge")

StartJob = Callable[[int, str], Awaitable[BridgeOutcome]]
OnDeadLetter = Callable[[DeadLetter], Coroutine[Any, Any, None]]
OnReport = Callable[[BridgeReport], Coroutine[Any, Any, None]]

__all__ = ["OnDeadLetter", "OnReport", "RunJobConsumer", "StartJob", "celery_queue"]

# Antenna's broker transport options use the same heartbeat: a dead connection is seen in ~1 min.
_HEARTBEAT = 30.0
# After stop(), starts in flight may finish (and be acked) for this long; the rest are
# redelivered by the broker (starting a job twice joins its one run).
_STOP_GRACE = 1.0


@dataclass
class _InFlight:
    message: Message
    request: RunJobRequest
    future: concurrent.futures.Future[BridgeOutcome]


@dataclass
class _Rejected:
    """A message that can never be run, to dead-letter at the next settle."""

    message: Message
    reason: str
    task_id: str | None


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
        max_attempts: int = 5,
        connect_timeout: timedelta = timedelta(seconds=5),
        report_interval: timedelta = timedelta(seconds=5),
        management_url: str | None = None,
        on_dead_letter: OnDeadLetter | None = None,
        on_report: OnReport | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self._url = broker_url
        self._queue = queue
        self._start = start
        self._prefetch = prefetch
        self._backoff = (retry_backoff.total_seconds(), retry_backoff_max.total_seconds())
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout.total_seconds()
        self._report_interval = report_interval.total_seconds()
        self._on_dead_letter = on_dead_letter
        self._on_report = on_report
        self._poll = poll_interval
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._in_flight: list[_InFlight] = []
        self._rejected: list[_Rejected] = []
        self._producer: Producer | None = None
        # Consecutive failed connections (or declarations): reset once consuming.
        self._broker_backoff = backoff.Backoff(*self._backoff)
        # Other consumers of the jobs queue when last looked (None: not looked yet).
        self._foreign: int | None = None
        # RabbitMQ's management API, to name them; their names when last named.
        self._management_url = management_url
        self._foreign_named: frozenset[str] = frozenset()
        # This bridge's connection as the broker sees it (its local address).
        self._own_peer: tuple[str, int] = ("", 0)

    @classmethod
    def from_settings(
        cls,
        settings: AntennaSettings,
        start: StartJob,
        *,
        on_dead_letter: OnDeadLetter | None = None,
        on_report: OnReport | None = None,
    ) -> RunJobConsumer:
        return cls(
            settings.require_broker_url(),
            settings.jobs_queue,
            start,
            prefetch=settings.prefetch,
            retry_backoff=settings.retry_backoff,
            retry_backoff_max=settings.retry_backoff_max,
            max_attempts=settings.max_attempts,
            connect_timeout=settings.connect_timeout,
            report_interval=settings.report_interval,
            management_url=settings.management_url,
            on_dead_letter=on_dead_letter,
            on_report=on_report,
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
                self._url,
                connect_timeout=self._connect_timeout,
                heartbeat=_HEARTBEAT,
                # basic_publish waits for the broker's ack: a retry copy or a dead letter is on
                # the broker before the original is acked.
                transport_options={"confirm_publish": True},
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
                delay = self._broker_backoff.failed()
                log.warning(
                    "broker error on %s (%s: %s); reconnecting in %.1f s",
                    self.where,
                    type(err).__name__,
                    err,
                    delay,
                )
                self._report(BridgeReport(queue=self._queue, connected=False, error=describe(err)))
                self._stop.wait(delay)
            finally:
                # Messages of a lost channel are redelivered by the broker; starts still
                # running finish on their own, and their results are ignored.
                self._in_flight.clear()
                self._rejected.clear()
                self._producer = None
                conn.release()

    def _consume(self, conn: Connection) -> None:
        existed = queues.ensure_jobs_queue(conn, self._queue)
        channel = conn.channel()
        self._own_peer = _local_address(conn)
        queues.declare_dead_letter_queue(channel, self._queue)
        self._producer = Producer(channel, auto_declare=False)
        consumer = Consumer(
            channel,
            queues=[queues.consumed_queue(self._queue)],
            on_message=self._on_message,
            on_decode_error=self._on_undecodable,
            accept=[JSON_CONTENT_TYPE],
            prefetch_count=self._prefetch,
        )
        with consumer:
            self._broker_backoff.reset()
            if self._ready is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._ready.set)
            log.info(
                "consuming run_job messages from %s (%s)",
                self.where,
                "the queue as it was declared" if existed else "declared as Celery does",
            )
            last_beat = last_report = 0.0
            while not self._stop.is_set():
                self._settle()
                with contextlib.suppress(TimeoutError):  # nothing arrived within the poll
                    conn.drain_events(timeout=self._poll)
                now = time.monotonic()
                if now - last_beat >= 1.0:
                    conn.heartbeat_check()
                    last_beat = now
                if now - last_report >= self._report_interval:
                    self._look_around(channel)
                    last_report = now
            self._finish()

    def _look_around(self, channel: Any) -> None:
        """The queues' figures: a report, and a warning when another consumer appears."""
        jobs = queues.figures(channel, self._queue)
        dead = queues.figures(channel, queues.dead_letter_queue(self._queue))
        foreign = max(jobs.consumers - 1, 0)
        if foreign != self._foreign:
            if foreign:
                log.warning(
                    "%d other consumer(s) on %s take run_job messages the bridge never sees"
                    " (a leftover Antenna Celery worker on the jobs queue?); list them with"
                    " `rabbitmqctl list_consumers` and stop them",
                    foreign,
                    self.where,
                )
            elif self._foreign:
                log.info("no other consumer on %s any more", self.where)
                self._foreign_named = frozenset()
            self._foreign = foreign
        if foreign and self._management_url is not None:
            self._name_foreign()
        self._report(
            BridgeReport(
                queue=self._queue,
                connected=True,
                queue_depth=jobs.messages,
                consumers=jobs.consumers,
                foreign_consumers=foreign,
                dead_lettered=dead.messages,
            )
        )

    def _name_foreign(self) -> None:
        """The other consumers' connections by name, logged once each time they change (the
        management API lists a new consumer a few seconds after the broker counts it)."""
        try:
            found = management.foreign_consumers(
                self._management_url or "",
                self._vhost(),
                self._queue,
                self._own_peer,
                timeout=self._connect_timeout,
            )
        except (httpx.HTTPError, ValueError) as err:
            log.warning("cannot name the other consumers on %s: %s", self.where, err)
            return
        names = frozenset(c.describe() for c in found)
        if names and names != self._foreign_named:
            log.warning(
                "other consumer(s) on %s: %s; stop them (a leftover Antenna Celery worker on"
                " the jobs queue takes Runs the bridge never sees)",
                self.where,
                "; ".join(sorted(names)),
            )
        self._foreign_named = names

    def _vhost(self) -> str:
        vhost = urlsplit(self._url).path.lstrip("/")
        return unquote(vhost) if vhost else "/"

    def _on_message(self, message: Message) -> None:
        try:
            request = run_job_request(
                message.headers,
                message.body,
                message.content_type,
                message.content_encoding,
            )
        except MalformedTaskMessage as err:
            what = "not a run_job message" if isinstance(err, UnexpectedTask) else "malformed"
            log.error(
                "dead-lettering a message from %s (%s): %s [delivery %s, headers %s]",
                self.where,
                what,
                err.reason,
                message.delivery_tag,
                _short(message.headers),
            )
            self._rejected.append(_Rejected(message, f"{what}: {err.reason}", err.task_id))
            return
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._call_start(request), self._loop)
        self._in_flight.append(_InFlight(message, request, future))

    def _on_undecodable(self, message: Message, exc: Exception) -> None:
        log.error("dead-lettering an undecodable message from %s: %s", self.where, exc)
        self._rejected.append(_Rejected(message, f"malformed: undecodable body ({exc})", None))

    async def _call_start(self, request: RunJobRequest) -> BridgeOutcome:
        # The job run's trace starts at Antenna's message (the start's span is its child).
        attributes = {**tracing.job_attributes(request.job_id), "celery.task_id": request.task_id}
        with tracing.span("antenna_jobs.bridge.run_job", attributes):
            return await self._start(request.job_id, request.task_id)

    def _settle(self) -> None:
        """Ack what started; send what failed to wait (or to the dead letters).

        Only here (never from on_message) does the consumer publish: a publish waits for the
        broker's confirm, during which py-amqp delivers new messages to on_message, and a
        second confirm wait nested in the first would take its ack and leave the first waiting
        for ever. on_message only appends, so the lists are taken first.
        """
        rejected, self._rejected = self._rejected, []
        for r in rejected:
            self._dead_letter(r.message, r.reason, 1, None, r.task_id)
        items, self._in_flight = self._in_flight, []
        for item in items:
            if not item.future.done():
                self._in_flight.append(item)
            elif not item.future.cancelled():
                self._settle_one(item)

    def _settle_one(self, item: _InFlight) -> None:
        job_id, task_id = item.request.job_id, item.request.task_id
        error = item.future.exception()
        if error is None:
            item.message.ack()
            log.info("run_job %s for job %s: %s", task_id, job_id, item.future.result())
            return
        attempts = _attempts(item.message) + 1
        reason = describe(error)
        if not is_transient(error) and attempts >= self._max_attempts:
            log.error(
                "run_job %s for job %s failed %d times (last: %s); dead-lettered",
                task_id,
                job_id,
                attempts,
                reason,
            )
            self._dead_letter(item.message, reason, attempts, job_id, task_id)
            return
        delay = backoff.delay(attempts, *self._backoff)
        log.warning(
            "run_job %s for job %s failed (attempt %d, %s); requeued in %.1f s",
            task_id,
            job_id,
            attempts,
            reason,
            delay,
        )
        self._republish(
            item.message,
            queues.declare_retry_queue(
                item.message.channel, self._queue, max(int(delay * 1000), 1)
            ),
            {queues.ATTEMPTS_HEADER: attempts},
        )
        item.message.ack()

    def _dead_letter(
        self,
        message: Message,
        reason: str,
        attempts: int,
        job_id: int | None,
        task_id: str | None,
    ) -> None:
        self._republish(
            message,
            queues.dead_letter_queue(self._queue),
            {
                queues.ATTEMPTS_HEADER: attempts,
                queues.REASON_HEADER: reason,
                queues.JOB_ID_HEADER: job_id,
                queues.DEAD_AT_HEADER: datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        message.ack()
        if self._on_dead_letter is not None and self._loop is not None:
            letter = DeadLetter(job_id=job_id, task_id=task_id, reason=reason, attempts=attempts)
            future = asyncio.run_coroutine_threadsafe(self._on_dead_letter(letter), self._loop)
            future.add_done_callback(_log_hook_failure)

    def _republish(self, message: Message, queue: str, ours: dict[str, Any]) -> None:
        """A copy of ``message`` (its body as received, its headers plus ``ours``) to ``queue``
        through the default exchange; returns once the broker confirmed it."""
        assert self._producer is not None
        self._producer.publish(
            message.body,
            routing_key=queue,
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=queues.copy_headers(message.headers, **ours),
            delivery_mode=queues.PERSISTENT,
            retry=False,
            **queues.copy_properties(message.properties),
        )

    def _report(self, report: BridgeReport) -> None:
        if self._on_report is None or self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            future = asyncio.run_coroutine_threadsafe(self._on_report(report), self._loop)
            future.add_done_callback(_log_hook_failure)

    def _finish(self) -> None:
        """On stop: let starts in flight finish briefly, then give everything else back."""
        self._settle()
        deadline = time.monotonic() + _STOP_GRACE
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
            self._settle()
        for item in self._in_flight:
            item.future.cancel()
        self._in_flight.clear()
        self._rejected.clear()  # unacked: back to the queue, dead-lettered next time


def _attempts(message: Message) -> int:
    value = (message.headers or {}).get(queues.ATTEMPTS_HEADER, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _log_hook_failure(future: concurrent.futures.Future[None]) -> None:
    if future.cancelled():
        return
    if (error := future.exception()) is not None:
        log.warning("bridge hook failed (%s)", describe(error))


def _short(headers: dict[str, Any] | None, limit: int = 300) -> str:
    text = repr({k: v for k, v in (headers or {}).items() if k in ("task", "id", "argsrepr")})
    return text if len(text) <= limit else text[:limit] + "..."


def _local_address(conn: Connection) -> tuple[str, int]:
    """The connection's own address (what the broker reports as its peer)."""
    try:
        host, port = conn.connection.sock.getsockname()[:2]
    except (AttributeError, OSError):
        return ("", 0)
    return (str(host), int(port))
