"""One watch per worker process over every job whose aggregator runs in it, so a waiting job
costs next to nothing.

Results wake their aggregator at once: the inbox insert notifies ``<jobs schema>.inbox`` with the
job id in its own transaction (storage/inbox.py), and one LISTEN connection per process hands that
to the job's waiter. Everything an aggregator used to poll for on its own (is the job cancelled,
did another run take it, did an older attempt save results meanwhile, are rows waiting that no
notification announced) is read for all watched jobs in one statement per ``interval``, and the
rows of waiting jobs get their ``updated_at`` bumped in the same transaction. So the database sees
about one transaction per interval per worker process, however many jobs wait.

Why LISTEN/NOTIFY rather than a NATS notification or a single drainer: the inbox row and its
notification commit together (no notification for a row that was rolled back, none lost for one
that was committed while this process listens), it needs no other service, and each job keeps
its own aggregator (its Temporal activity, heartbeats and cancellation) unchanged. Notifications
sent while the listener is reconnecting are lost; the per-interval read finds those rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from antenna_db import cachalot, job_store
from core.backoff import Backoff
from core.settings import DatabaseSettings
from core.states import JobState
from core.worker_calls import JobWorker
from storage import inbox, job_workers
from storage.pool import Pool, connect_kwargs

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MAX = 30.0


@dataclass
class Seen:
    """A job as the last read found it."""

    status: JobState
    run_id: str | None
    # Images the run has counted done in Postgres (any attempt's saves).
    done: int
    waiting: bool
    # The run is paused (no tasks handed out): not a stall.
    paused: bool = False
    # Seconds since a processing worker last polled for tasks of the job's pipeline (None:
    # never). Not part of "the job changed": it moves on every read.
    poll_age: float | None = field(default=None, compare=False)
    # The workers of the run (storage/job_workers.py), as read with the job: not part of "the job
    # changed" either.
    workers: list[JobWorker] = field(default_factory=list, compare=False)


@dataclass
class Watch:
    """One aggregator's view: ``wait`` returns when results may be waiting or the job changed."""

    job_id: int
    seen: Seen | None = None
    touch: bool = False
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when woken (results, an advisory, a new read), False after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        woken = self._event.is_set()
        self._event.clear()
        return woken

    def request_touch(self) -> None:
        """Bump the job row's updated_at with the next read (Antenna's reaper)."""
        self.touch = True


class InboxWatch:
    def __init__(self, pool: Pool, database: DatabaseSettings, interval: float) -> None:
        self._pool = pool
        self._database = database
        self.interval = interval
        self._channel = inbox.channel(database.jobs_schema)
        self._watches: dict[int, list[Watch]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def watch(self, job_id: int) -> Iterator[Watch]:
        """Watch ``job_id`` while the block runs. The listener and the reads run only while
        some job is watched: a worker with no job waiting holds no connection for them."""
        watch = Watch(job_id)
        self._watches.setdefault(job_id, []).append(watch)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._listen(), name="inbox-listen"),
                asyncio.create_task(self._read_loop(), name="inbox-read"),
            ]
        try:
            yield watch
        finally:
            watches = self._watches.get(job_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(job_id, None)
            if not self._watches:
                for task in self._tasks:
                    task.cancel()
                self._tasks = []

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    async def _listen(self) -> None:
        reconnect = Backoff(1.0, RECONNECT_BACKOFF_MAX)
        while True:
            try:
                options = str(connect_kwargs(self._database)["options"])
                async with await psycopg.AsyncConnection.connect(
                    self._database.url, autocommit=True, options=options
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    reconnect.reset()
                    # Whatever was announced while nobody listened: look once.
                    self._wake_all()
                    async for notify in conn.notifies():
                        for watch in self._watches.get(_job_id(notify.payload), ()):
                            watch.wake()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.listening.clear()
                wait = reconnect.failed()
                log.warning("inbox listener lost (%s); reconnecting in %.0f s", err, wait)
                self._wake_all()
                await asyncio.sleep(wait)

    async def _read_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.read()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # An outage: the aggregators keep their last view and try again next interval.
                log.warning("inbox watch read failed: %s", err)

    async def read(self) -> None:
        """One read of every watched job (and the touches asked for), in one transaction."""
        ids = list(self._watches)
        if not ids:
            return
        touch = [i for i in ids if any(w.touch for w in self._watches.get(i, ()))]
        async with self._pool.connection() as conn, conn.transaction():
            rows = await job_store.watched(conn, ids)
            if touch:
                await job_store.touch_all(conn, touch)
            workers = await job_workers.of_jobs(conn, ids)
        if touch:
            cachalot.wrote("jobs_job")
        for row in rows:
            seen = Seen(
                status=JobState(row["status"]),
                run_id=row["run_id"],
                done=int(row["done"]),
                waiting=bool(row["waiting"]),
                paused=bool(row["paused"]),
                poll_age=row["poll_age"],
                workers=workers.get(int(row["id"]), []),
            )
            for watch in self._watches.get(int(row["id"]), ()):
                if int(row["id"]) in touch:
                    watch.touch = False
                changed = watch.seen is None or watch.seen != seen
                watch.seen = seen
                if seen.waiting or changed:
                    watch.wake()


def _job_id(payload: str) -> int:
    try:
        return int(payload)
    except ValueError:
        return -1
