"""The system at a glance: jobs by status, every running job with its counts and its NATS queue,
the result inbox, when processing workers last polled each pipeline, and the bridge's last report
of Antenna's broker (storage/bridge_reports.py).

Gathered on demand (a ``/metrics`` scrape, ``antenna-jobs status``): three queries, plus one NATS
consumer-info request per running async job, issued side by side with a bound. ``OverviewSource``
keeps the last overview for ``ttl`` seconds, so scrapes from several Prometheus servers (or a
``status --watch``) cost one gathering per interval, and nothing polls while nobody looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from antenna_db import job_overview
from core import worker_calls
from core.naming import Names
from core.states import RUNNING_STATES, DispatchMode, JobState
from core.worker_calls import JobWorker
from storage import bridge_reports, inbox, job_workers, server
from storage.bridge_reports import SavedReport
from storage.pipeline_polls import PipelinePoll
from storage.pool import Pool

# Consumer-info requests in flight at once, and at most this many running jobs are listed.
NATS_CONCURRENCY = 16
MAX_RUNNING = 1000


class QueueFigures(BaseModel):
    """A run's durable consumer, as NATS reports it."""

    # Published, not yet delivered to any worker.
    queued: int
    # Delivered, not yet acked (a worker has them, or their ack_wait runs).
    in_flight: int
    # Delivered more than once (ack_wait expired).
    redelivered: int


class RunningJob(BaseModel):
    id: int
    name: str
    project_id: int
    status: JobState
    job_type: str
    dispatch_mode: DispatchMode
    pipeline_id: int | None
    pipeline_slug: str | None
    # The current run's durable consumer (None before any run took the job).
    consumer: str | None
    total: int
    processed: int
    failed: int
    # Seconds since the current run started (None before any run took the job).
    elapsed: float | None
    # Result rows posted for it, not yet saved.
    inbox: int
    queue: QueueFigures | None = None
    # No processing worker polled the pipeline within the window, and the run is older than
    # the window (async jobs only).
    waiting_for_workers: bool = False
    # Why its saves wait for Antenna's schema (None: they do not), and for how many seconds.
    schema_error: str | None = None
    schema_error_age: float | None = None
    # Its current run's workers (async jobs: storage/job_workers.py), oldest first; those that
    # called within the window serve it now.
    workers: list[JobWorker] = []
    # Images per second of the workers serving it now (None: no worker was ever recorded).
    recent_rate: float | None = None

    @property
    def done(self) -> int:
        """Images counted, processed or failed (Antenna's "processed")."""
        return self.processed + self.failed

    @property
    def rate(self) -> float:
        """Images per second since the run started."""
        return self.done / self.elapsed if self.elapsed and self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every image is counted, at the recent rate of the workers serving it
        (at the rate so far for a job without recorded workers); None: no rate."""
        remaining = max(self.total - self.done, 0)
        if remaining == 0:
            return 0.0 if self.total else None
        rate = self.rate if self.recent_rate is None else self.recent_rate
        return remaining / rate if rate > 0 else None


class Overview(BaseModel):
    taken_at: datetime
    jobs_by_status: dict[str, int]
    running: list[RunningJob]
    inbox_depth: int
    # Seconds since the oldest unsaved result row was posted (None: the inbox is empty).
    inbox_oldest_age: float | None
    polls: list[PipelinePoll]
    # One per jobs queue a bridge consumes (none: no bridge ever ran against this database).
    bridges: list[SavedReport] = []


async def gather(
    pool: Pool, js: JetStreamContext | None, names: Names, workers_window: float
) -> Overview:
    """One overview: the database in one transaction (one snapshot), then the NATS figures."""
    async with pool.connection() as conn, conn.transaction():
        taken_at = await server.now(conn)
        by_status = await job_overview.by_status(conn)
        running = [
            RunningJob.model_validate(r)
            for r in await job_overview.running(conn, RUNNING_STATES, MAX_RUNNING)
        ]
        inbox_depth, inbox_oldest_age = await inbox.depth(conn)
        polls = await job_overview.pipeline_polls(conn)
        bridges = await bridge_reports.latest(conn)
        workers = await job_workers.of_jobs(conn, [job.id for job in running])
    ages = {p.pipeline_id: p.age for p in polls}
    for job in running:
        job.workers = workers.get(job.id, [])
        if job.workers:
            job.recent_rate = worker_calls.recent_rate(job.workers, workers_window)
        if job.dispatch_mode == DispatchMode.ASYNC_API and job.pipeline_id is not None:
            age = ages.get(job.pipeline_id)
            # As the job's own progress says it: only once the run is older than the window.
            job.waiting_for_workers = (age is None or age > workers_window) and (
                job.elapsed or 0.0
            ) > workers_window
    if js is not None:
        await _queue_figures(js, names, running)
    return Overview(
        taken_at=taken_at,
        jobs_by_status=by_status,
        running=running,
        inbox_depth=inbox_depth,
        inbox_oldest_age=inbox_oldest_age,
        polls=polls,
        bridges=bridges,
    )


async def _queue_figures(js: JetStreamContext, names: Names, running: list[RunningJob]) -> None:
    bound = asyncio.Semaphore(NATS_CONCURRENCY)

    async def one(job: RunningJob, consumer: str) -> None:
        async with bound:
            # No stream yet (collecting) or any more (cleaned up), or NATS unreachable: no figures.
            with contextlib.suppress(NotFoundError, nats.errors.Error, OSError, TimeoutError):
                info = await js.consumer_info(names.stream(job.id), consumer)
                job.queue = QueueFigures(
                    queued=int(info.num_pending or 0),
                    in_flight=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                )

    await asyncio.gather(
        *(
            one(job, job.consumer)
            for job in running
            if job.consumer and job.dispatch_mode == DispatchMode.ASYNC_API
        )
    )


class OverviewSource:
    """The latest overview, gathered again once it is older than ``ttl`` seconds."""

    def __init__(
        self,
        pool: Pool,
        js: JetStreamContext | None,
        names: Names,
        *,
        workers_window: float,
        ttl: float = 5.0,
    ) -> None:
        self._pool = pool
        self._js = js
        self._names = names
        self._window = workers_window
        self.ttl = ttl
        self._last: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Overview:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.ttl:
                return self._last[1]
            overview = await gather(self._pool, self._js, self._names, self._window)
            self._last = (time.monotonic(), overview)
            return overview
