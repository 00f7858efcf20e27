"""The API's view of how busy each running async job is, for fair share (core/fair_share.py).

Cheap by construction: once per ``refresh_interval`` per process (whatever the request rate) one
SQL query lists the running, unpaused async jobs and their consumers, and their NATS consumer
infos are read side by side (``num_ack_pending`` = tasks in flight, ``num_pending`` = tasks
waiting): the in-flight counts NATS already keeps. Between reads, tasks this process hands out are
added to the snapshot. Which pipelines workers poll for, and which projects' jobs those workers
may run, is remembered per process from the listing, so a job no worker here may serve never
holds the others back. Both memories are bounded (core/expiring.py): whatever slugs or tokens
the listing is polled with, they hold at most MAX_POLLED and MAX_POLLERS entries, none older
than the poll window.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
import nats.js.errors
import psycopg
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerInfo
from psycopg_pool import PoolTimeout

from antenna_db import job_listing
from core.expiring import ExpiringMap
from core.fair_share import JobLoad, least_served_first, withheld
from core.settings import Settings
from storage.pool import Pool

log = logging.getLogger(__name__)

# Listing polls without a pipeline filter: every pipeline is polled for.
ANY_PIPELINE = "*"
# (pipeline slug, poller) pairs remembered at most; past it the least recently polled go first
# (a real deployment polls a few dozen pipelines; a caller naming thousands only evicts its own).
MAX_POLLED = 10_000
# Non-superuser pollers (users) whose runnable projects are remembered at most.
MAX_POLLERS = 1_000
# The poller of a superuser's token: it may serve every project.
EVERY_PROJECT = 0


class FairShare:
    def __init__(self, pool: Pool, nc: NatsClient, settings: Settings, db_timeout: float) -> None:
        self.settings = settings.fair_share
        self._pool = pool
        self._db_timeout = db_timeout
        self._names = settings.jobs.names
        self._js = nc.jetstream(timeout=settings.nats.request_timeout.total_seconds())
        self._loads: dict[int, JobLoad] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        window = self.settings.poll_window.total_seconds()
        # (slug or ANY_PIPELINE, user id or EVERY_PROJECT): a worker of that scope listed jobs
        # of that pipeline within the poll window.
        self.polled: ExpiringMap[tuple[str, int], None] = ExpiringMap(window, MAX_POLLED)
        # user id -> the projects whose jobs that user's workers may run.
        self.pollers: ExpiringMap[int, frozenset[int]] = ExpiringMap(window, MAX_POLLERS)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def listed(self, slugs: list[str] | None, user_id: int, may_run: frozenset[int] | None) -> None:
        """A worker polled the listing for these pipelines (None or []: for any), with the token
        of ``user_id``, who may run the jobs of ``may_run`` projects (None: of every project)."""
        scope = EVERY_PROJECT
        if may_run is not None:
            scope = user_id
            self.pollers.put(user_id, may_run)
        for slug in slugs or [ANY_PIPELINE]:
            self.polled.put((slug, scope), None)

    def _servable(self, load: JobLoad) -> bool:
        """Some worker that may run the job polled for its pipeline within the window."""
        if load.in_flight > 0:
            return True
        slugs = (ANY_PIPELINE, load.pipeline_slug or "")
        if any((slug, EVERY_PROJECT) in self.polled for slug in slugs):
            return True
        return any(
            load.project_id in projects and any((slug, user) in self.polled for slug in slugs)
            for user, projects in self.pollers.items()
        )

    async def withheld(self, job_id: int, batch_size: int) -> str | None:
        """Why the job gets no tasks now, or None."""
        if not self.enabled:
            return None
        loads = await self._fresh()
        return withheld(loads, job_id, self.settings.weight, self._servable, slack=batch_size)

    def took(self, job_id: int, count: int) -> None:
        """This process just handed out ``count`` tasks of the job."""
        load = self._loads.get(job_id)
        if load is not None and count:
            load.in_flight += count
            load.waiting = max(0, load.waiting - count)

    async def order(self, rows: list[tuple[int, int]]) -> list[int]:
        """Listed job ids, least served first."""
        if not self.enabled:
            return [job_id for job_id, _ in rows]
        return least_served_first(await self._fresh(), rows, self.settings.weight)

    async def _fresh(self) -> dict[int, JobLoad]:
        interval = self.settings.refresh_interval.total_seconds()
        if time.monotonic() - self._read_at < interval:
            return self._loads
        async with self._lock:
            if time.monotonic() - self._read_at >= interval:
                try:
                    self._loads = await self._read()
                except (psycopg.Error, PoolTimeout) as err:
                    # Fail open: the last view (or none) rather than a refused request.
                    log.warning("fair share: reading the running jobs failed: %s", err)
                self._read_at = time.monotonic()
        return self._loads

    async def _read(self) -> dict[int, JobLoad]:
        async with self._pool.connection(timeout=self._db_timeout) as conn:
            jobs = await job_listing.running_async_jobs(conn)
        infos = await asyncio.gather(*(self._consumer(job["id"], job["consumer"]) for job in jobs))
        loads: dict[int, JobLoad] = {}
        for job, info in zip(jobs, infos, strict=True):
            if info is None:
                continue
            loads[job["id"]] = JobLoad(
                job_id=job["id"],
                project_id=job["project_id"],
                pipeline_slug=job["pipeline_slug"],
                in_flight=int(info.num_ack_pending or 0),
                waiting=int(info.num_pending or 0),
            )
        return loads

    async def _consumer(self, job_id: int, consumer: str) -> ConsumerInfo | None:
        try:
            info: ConsumerInfo = await self._js.consumer_info(self._names.stream(job_id), consumer)
            return info
        except nats.js.errors.NotFoundError:
            return None  # not prepared yet, or gone
        except (nats.errors.Error, OSError) as err:
            log.warning("fair share: consumer info of job %s failed: %r", job_id, err)
            return None
