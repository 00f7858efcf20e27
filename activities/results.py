"""Aggregate: drain the job's result inbox until every image is processed or failed.

Long-running and heartbeating on the long task queue. The aggregator is the single writer of the
job's progress while it runs (throttled), keeps the Redis pending/failed sets in step, reconciles
images whose task exhausted max_deliver, and after ``stall_period`` without movement (with every
task delivered) counts the rest failed. A job row saying CANCELING/REVOKED stops it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aggregate_progress import apply_counters, throughput_line
from activities.heartbeat import heartbeating
from activities.job_state_cache import JobStateCache
from activities.jobs import CANCEL_STATES, final_status
from activities.lost_images import MaxDeliveriesWatcher, TaskLookup
from activities.models import (
    JOB_CANCELLED,
    AggregateCounters,
    AggregateInput,
    AggregateResult,
)
from activities.result_saver import BatchOutcome, PipelineContext, save_batch
from core import job_store, naming
from core.progress import JobProgress
from core.settings import Settings
from core.states import FINAL_STATES, JobState

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
# An attempt whose run is over (the job was started again since it began): it stops.
STALE_RUN = "StaleRun"
# Throughput lines go to the job log at most this often (progress is written more often).
_THROUGHPUT_EVERY = 10.0

_COUNTS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'processed') AS processed,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM job_images WHERE job_id = %(job)s
"""
# Only this run's rows: a retry run of the same job starts at its own started_at.
_RESULT_COUNTS = """
SELECT count(*) FILTER (WHERE d.bbox_x1 IS NOT NULL) AS detections,
       coalesce(sum((SELECT count(*) FROM classifications c WHERE c.detection_id = d.id)), 0)
           AS classifications
FROM detections d JOIN jobs j ON j.id = d.job_id
WHERE d.job_id = %(job)s AND d.created_at >= j.started_at
"""
_PIPELINE = """
SELECT p.slug, a.id, a.key, a.task_type
FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
JOIN pipeline_algorithms pa ON pa.pipeline_id = p.id
JOIN algorithms a ON a.id = pa.algorithm_id
WHERE j.id = %s ORDER BY a.id
"""
_FAIL_REST = (
    "UPDATE job_images SET status = 'failed', error = %s, updated_at = now()"
    " WHERE job_id = %s AND status = 'pending' RETURNING source_image_id"
)


async def load_pipeline(conn: psycopg.AsyncConnection[Any], job_id: int) -> PipelineContext:
    cur = await conn.execute(_PIPELINE, (job_id,))
    rows = await cur.fetchall()
    detector = next(
        (r["id"] for r in rows if r["task_type"] in ("localization", "detection")), None
    )
    return PipelineContext(
        slug=rows[0]["slug"] if rows else "",
        algorithms={r["key"]: r["id"] for r in rows},
        detector_id=detector,
    )


async def load_counters(conn: psycopg.AsyncConnection[Any], job_id: int) -> AggregateCounters:
    """Counters from Postgres: the truth on every (re)start, so a retry never double counts."""
    cur = await conn.execute(_COUNTS, {"job": job_id})
    images = await cur.fetchone()
    cur = await conn.execute(_RESULT_COUNTS, {"job": job_id})
    results = await cur.fetchone()
    assert images is not None and results is not None
    return AggregateCounters(**images, **results)


class ResultActivities:
    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        js: JetStreamContext,
        redis: aioredis.Redis,
        settings: Settings,
    ) -> None:
        self._pool = pool
        self._nc = nc
        self._js = js
        self._settings = settings
        self._lookup = TaskLookup(js)
        self._cache = JobStateCache(redis, int(settings.redis.key_ttl.total_seconds()))

    @activity.defn(name="aggregate_results")
    async def aggregate_results(self, inp: AggregateInput) -> AggregateResult:
        run = _Aggregation(self, inp.job_id)
        return await run.run()


class _Aggregation:
    """One attempt of aggregate_results for one job; its state lives as long as the attempt."""

    def __init__(self, owner: ResultActivities, job_id: int) -> None:
        self.o = owner
        self.job_id = job_id
        self.jobs = owner._settings.jobs
        self.counters = AggregateCounters()
        self.result = AggregateResult(counters=self.counters)
        self.progress = JobProgress()
        self.run_started: datetime | None = None
        # The last batch found nothing to claim (checks that can wait for a quiet moment run).
        self.idle = False
        self.started = time.monotonic()
        self.last_change = self.started
        self.last_progress = 0.0
        self.last_throughput = self.started
        # The first check waits one interval: publish creates the Redis keys meanwhile, and a
        # rebuild is only for keys that went missing later (a flush).
        self.last_check = self.started
        self.dirty = True

    async def run(self) -> AggregateResult:
        async with self.o._pool.connection() as conn:
            self.pipeline = await load_pipeline(conn, self.job_id)
            self.counters = await load_counters(conn, self.job_id)
            job = await job_store.get_job(conn, self.job_id)
            self.progress = job.progress
            # Which run this attempt works for: a retry of the job stamps a new started_at.
            self.run_started = job.started_at
        watcher = MaxDeliveriesWatcher(self.o._nc, self.job_id)
        await watcher.start()
        try:
            async with heartbeating(self.jobs.heartbeat_interval, lambda: self.counters):
                await self._loop(watcher)
        finally:
            await watcher.stop()
        status = final_status(self.counters, self.jobs.failure_threshold)
        await self._write_progress(final=status)
        self.result.counters = self.counters
        return self.result

    async def _loop(self, watcher: MaxDeliveriesWatcher) -> None:
        batch = self.jobs.aggregate_batch_size
        while self.counters.done < self.counters.total:
            now = time.monotonic()
            if now - self.last_check >= self.jobs.heartbeat_interval.total_seconds():
                self.last_check = now
                await self._check_job()
            exhausted = await self._exhausted(watcher)
            outcome = await self._save(batch, exhausted)
            self.idle = outcome.claimed == 0
            await self._apply(outcome)
            if exhausted:
                self.result.reconciled += len(set(outcome.failed) & exhausted.keys())
                await self._log(
                    f"{len(exhausted)} tasks exhausted max_deliver"
                    f" ({self.o._settings.nats.max_deliver}) without a result: counted failed",
                    level="WARNING",
                    context={"image_ids": sorted(exhausted)[:10]},
                )
            await self._maybe_write_progress()
            if outcome.claimed < batch and self.counters.done < self.counters.total:
                if time.monotonic() - self.last_change >= self.jobs.stall_period.total_seconds():
                    await self._reconcile_stall()
                else:
                    await asyncio.sleep(self.jobs.aggregate_idle_poll.total_seconds())

    async def _apply(self, outcome: BatchOutcome) -> None:
        if not outcome.moved:
            return
        await self.o._cache.mark_done(self.job_id, outcome.processed, outcome.failed)
        self.counters = self.counters.model_copy(
            update={
                "processed": self.counters.processed + len(outcome.processed),
                "failed": self.counters.failed + len(outcome.failed),
                "detections": self.counters.detections + outcome.detections,
                "classifications": self.counters.classifications + outcome.classifications,
            }
        )
        self.last_change = time.monotonic()
        self.dirty = True

    async def _save(self, batch: int, exhausted: dict[int, str]) -> BatchOutcome:
        """One batch, saved only while the job is not cancelled or final.

        The job row is read FOR SHARE in the batch's transaction, so a status change waits for
        the batch to commit or is seen by it: no result is ever saved after CANCELING (and so
        after REVOKED), even by an attempt Temporal already gave up on. Idle polls skip it.
        """
        async with self.o._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM result_inbox WHERE job_id = %s) AS waiting",
                (self.job_id,),
            )
            row = await cur.fetchone()
            if not exhausted and not (row and row["waiting"]):
                return BatchOutcome()
            cur = await conn.execute(
                "SELECT status, started_at FROM jobs WHERE id = %s FOR SHARE", (self.job_id,)
            )
            self._check_row(await cur.fetchone())
            return await save_batch(
                conn, self.job_id, self.pipeline, batch, self.o._lookup.image_for_reply, exhausted
            )

    def _check_row(self, row: dict[str, Any] | None) -> None:
        """Stop when the job is cancelled (or final), or when it was started again since this
        attempt began: then this is an attempt of a run that is over (terminated, say) and the
        new run's aggregator owns the job."""
        if row is None or row["started_at"] != self.run_started:
            raise ApplicationError(
                f"job {self.job_id} was started again: this attempt's run is over",
                type=STALE_RUN,
                non_retryable=True,
            )
        status = JobState(row["status"])
        if status in CANCEL_STATES or status in FINAL_STATES:
            raise ApplicationError(
                f"job {self.job_id} is {status}", type=JOB_CANCELLED, non_retryable=True
            )

    async def _check_job(self) -> None:
        """Each tick: a job cancelled in the database stops here; flushed Redis state is rebuilt;
        results saved by another attempt (one Temporal gave up on, still finishing a batch) are
        counted from Postgres, so this attempt never waits for images already done."""
        async with self.o._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT status, started_at FROM jobs WHERE id = %s", (self.job_id,)
            )
            self._check_row(await cur.fetchone())
            if not await self.o._cache.exists(self.job_id):
                await self.o._cache.rebuild(conn, self.job_id)
            if not self.idle:
                return
            # Only while idle, and on the pending rows' partial index: cheap for any job size.
            cur = await conn.execute(
                "SELECT count(*) AS n FROM job_images WHERE job_id = %s AND status = 'pending'",
                (self.job_id,),
            )
            pending = await cur.fetchone()
            if pending is not None and pending["n"] != self.counters.remaining:
                self.counters = await load_counters(conn, self.job_id)
                self.last_change = time.monotonic()
                self.dirty = True

    async def _exhausted(self, watcher: MaxDeliveriesWatcher) -> dict[int, str]:
        failures: dict[int, str] = {}
        stream = naming.stream_name(self.job_id)
        for seq, deliveries in watcher.take():
            image = await self.o._lookup.image_for_seq(stream, seq)
            if image is not None:
                failures[image] = f"task delivered {deliveries} times without a result"
        return failures

    async def _reconcile_stall(self) -> None:
        """Nothing moved for stall_period: once every task was delivered, the rest fail."""
        if not await self._all_delivered():
            self.last_change = time.monotonic()
            return
        minutes = self.jobs.stall_period.total_seconds() / 60
        reason = f"no result for {minutes:.1f} min after every task was delivered"
        async with self.o._pool.connection() as conn:
            cur = await conn.execute(_FAIL_REST, (reason, self.job_id))
            failed = [r["source_image_id"] for r in await cur.fetchall()]
        await self._apply(BatchOutcome(failed=failed))
        self.result.reconciled += len(failed)
        self.result.stalled = True
        await self._log(
            f"Stalled: {len(failed)} images counted failed ({reason})",
            level="WARNING",
            context={"image_ids": failed[:10], "count": len(failed)},
        )

    async def _all_delivered(self) -> bool:
        stream = naming.stream_name(self.job_id)
        try:
            consumer = await self.o._js.consumer_info(stream, naming.consumer_name(self.job_id))
            info = await self.o._js.stream_info(stream)
        except NotFoundError:
            return True  # the queue is gone: nothing more can be delivered
        async with self.o._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM job_images ji JOIN source_images si"
                " ON si.id = ji.source_image_id WHERE ji.job_id = %s AND si.url IS NOT NULL"
                " AND si.url <> ''",
                (self.job_id,),
            )
            row = await cur.fetchone()
        publishable = int(row["n"]) if row else 0
        return consumer.num_pending == 0 and info.state.messages >= publishable

    async def _maybe_write_progress(self) -> None:
        now = time.monotonic()
        if self.dirty and now - self.last_progress >= self.jobs.progress_interval.total_seconds():
            await self._write_progress()
        every = max(_THROUGHPUT_EVERY, self.jobs.progress_interval.total_seconds())
        if now - self.last_throughput >= every:
            self.last_throughput = now
            if self.counters.done:
                await self._log(throughput_line(self.counters, now - self.started))

    async def _write_progress(self, final: JobState | None = None) -> None:
        self.progress = apply_counters(self.progress, self.counters, final)
        async with self.o._pool.connection() as conn:
            await job_store.save_progress(
                conn, self.job_id, self.progress, run_started_at=self.run_started
            )
        self.last_progress = time.monotonic()
        self.dirty = False

    async def _log(
        self, message: str, *, level: str = "INFO", context: dict[str, Any] | None = None
    ) -> None:
        async with self.o._pool.connection() as conn:
            await job_store.append_log(conn, self.job_id, message, level=level, context=context)
