"""Aggregate: drain the job's result inbox until every image is processed or failed.

Long-running and heartbeating on the long task queue. The aggregator is the single writer of the
job's progress while it runs (throttled), keeps the Redis pending/failed sets in step, reconciles
images whose task exhausted max_deliver, and after ``stall_period`` without movement (with every
task delivered) counts the rest failed. A job row saying CANCELING/REVOKED stops it. While it
waits it bumps the row's ``updated_at`` every ``touch_interval``, so Antenna's reaper (if it
still runs) never takes the job for dead; the sessions' and stations' cached counts are
refreshed every ``counts_interval`` and at the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aggregate_progress import apply_counters, throughput_line
from activities.crops import CropRequests
from activities.heartbeat import heartbeating, run_id
from activities.job_state_cache import JobStateCache
from activities.jobs import CANCEL_STATES, final_status
from activities.lost_images import MaxDeliveriesWatcher, TaskLookup
from activities.models import AggregateInput, AggregateResult
from activities.result_saver import BatchOutcome, BatchSaver
from antenna_db import cachalot, captures, counts, job_store, pipelines
from antenna_db.job_store import RunState
from core import inbox, job_images, job_runs
from core.counters import AggregateCounters
from core.db import Pool
from core.errors import Failure, failure
from core.progress import JobProgress
from core.settings import Settings
from core.states import FINAL_STATES, JobState

# An attempt whose run is over (the job was started again since it began): it stops.
# Throughput lines go to the job log at most this often (progress is written more often).
_THROUGHPUT_EVERY = 10.0


class ResultActivities:
    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        js: JetStreamContext,
        redis: aioredis.Redis,
        settings: Settings,
        crops: CropRequests | None = None,
    ) -> None:
        self._pool = pool
        self._nc = nc
        self._js = js
        self._settings = settings
        self._lookup = TaskLookup(js)
        self._crops = crops or CropRequests()
        self._cache = JobStateCache(
            redis, int(settings.redis.key_ttl.total_seconds()), settings.jobs.names
        )

    @activity.defn(name="aggregate_results")
    async def aggregate_results(self, inp: AggregateInput) -> AggregateResult:
        run = _Aggregation(
            self._pool,
            self._nc,
            self._js,
            self._lookup,
            self._cache,
            self._crops,
            self._settings,
            inp.job_id,
        )
        return await run.run()


class _Aggregation:
    """One attempt of aggregate_results for one job; its state lives as long as the attempt."""

    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        js: JetStreamContext,
        lookup: TaskLookup,
        cache: JobStateCache,
        crops: CropRequests,
        settings: Settings,
        job_id: int,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.js = js
        self.lookup = lookup
        self.cache = cache
        self.crops = crops
        self.settings = settings
        self.names = settings.jobs.names
        self.job_id = job_id
        self.jobs = settings.jobs
        self.run_id = run_id()
        self.counters = AggregateCounters()
        self.result = AggregateResult(counters=self.counters)
        self.progress = JobProgress()
        self.consumer = ""
        self.project_id = 0
        # The last batch found nothing to claim (checks that can wait for a quiet moment run).
        self.idle = False
        self.started = time.monotonic()
        self.last_change = self.started
        self.last_progress = 0.0
        self.last_throughput = self.started
        self.last_touch = self.started
        self.last_counts = self.started
        # The first check waits one interval: publish creates the Redis keys meanwhile, and a
        # rebuild is only for keys that went missing later (a flush).
        self.last_check = self.started
        self.dirty = True

    async def run(self) -> AggregateResult:
        async with self.pool.connection() as conn:
            pipeline = await pipelines.load(conn, self.job_id)
            run = await job_runs.get(conn, self.job_id)
            job = await job_store.get_job(conn, self.job_id)
        if run is None or run.run_id != self.run_id:
            raise self._stale()
        self.counters = run.counters
        self.consumer = run.consumer
        self.project_id = job.project_id
        self.progress = job.progress
        self.saver = BatchSaver(self.job_id, job.project_id, pipeline, self.lookup.image_for_reply)
        watcher = MaxDeliveriesWatcher(
            self.nc, self.names.max_deliveries_advisory(self.job_id, self.consumer)
        )
        await watcher.start()
        try:
            async with heartbeating(self.jobs.heartbeat_interval, lambda: self.counters):
                await self._loop(watcher)
        finally:
            await watcher.stop()
        status = final_status(self.counters, self.jobs.failure_threshold)
        await self._write_progress(final=status)
        await self._refresh_counts()
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
                    f" ({self.settings.nats.max_deliver}) without a result: counted failed",
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
        for image, reason in outcome.refused.items():
            where = f"image {image}" if image >= 0 else f"result row {-image}"
            await self._log(f"Result for {where} refused: {reason}", level="ERROR")
        # After the batch's commit: Antenna's cache and crop worker hear of it.
        cachalot.wrote(*outcome.tables)
        self.crops.new_detections(outcome.need_crops)
        if not outcome.moved:
            return
        await self.cache.mark_done(self.job_id, outcome.processed, outcome.failed)
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
        async with self.pool.connection() as conn, conn.transaction():
            if not exhausted and not await inbox.waiting(conn, self.job_id):
                return BatchOutcome()
            self._check_row(await job_store.run_state(conn, self.job_id, share=True))
            return await self.saver.save_batch(conn, batch, exhausted)

    def _stale(self) -> ApplicationError:
        return failure(
            Failure.STALE_RUN, f"job {self.job_id} was started again: this attempt's run is over"
        )

    def _check_row(self, state: RunState) -> None:
        """Stop when the job is cancelled (or final), or when another run took it since this
        attempt began: then this is an attempt of a run that is over (terminated, say) and the
        new run's aggregator owns the job."""
        if state.run_id != self.run_id:
            raise self._stale()
        if state.status in CANCEL_STATES or state.status in FINAL_STATES:
            raise failure(Failure.JOB_CANCELLED, f"job {self.job_id} is {state.status}")

    async def _check_job(self) -> None:
        """Each tick: a job cancelled in the database stops here; flushed Redis state is rebuilt;
        results saved by another attempt (one Temporal gave up on, still finishing a batch) are
        counted from Postgres, so this attempt never waits for images already done."""
        now = time.monotonic()
        async with self.pool.connection() as conn:
            self._check_row(await job_store.run_state(conn, self.job_id))
            if not await self.cache.exists(self.job_id):
                await self.cache.rebuild(conn, self.job_id)
            if now - self.last_touch >= self.jobs.touch_interval.total_seconds():
                self.last_touch = now
                await job_store.touch(conn, self.job_id)
            if not self.idle:
                return
            pending = await job_images.pending_count(conn, self.job_id)
            if pending != self.counters.remaining:
                run = await job_runs.get(conn, self.job_id)
                if run is not None:
                    self.counters = run.counters
                    self.last_change = time.monotonic()
                    self.dirty = True
        if now - self.last_counts >= self.jobs.counts_interval.total_seconds():
            await self._refresh_counts()

    async def _refresh_counts(self) -> None:
        self.last_counts = time.monotonic()
        async with self.pool.connection() as conn:
            await counts.refresh_job_counts(conn, self.job_id, self.project_id)

    async def _exhausted(self, watcher: MaxDeliveriesWatcher) -> dict[int, str]:
        failures: dict[int, str] = {}
        stream = self.names.stream(self.job_id)
        for seq, deliveries in watcher.take():
            image = await self.lookup.image_for_seq(stream, seq)
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
        async with self.pool.connection() as conn, conn.transaction():
            failed = await job_images.fail_pending(conn, self.job_id, reason)
            await job_runs.add(conn, self.job_id, failed=len(failed))
        await self._apply(BatchOutcome(failed=failed))
        self.result.reconciled += len(failed)
        self.result.stalled = True
        await self._log(
            f"Stalled: {len(failed)} images counted failed ({reason})",
            level="WARNING",
            context={"image_ids": failed[:10], "count": len(failed)},
        )

    async def _all_delivered(self) -> bool:
        stream = self.names.stream(self.job_id)
        try:
            consumer = await self.js.consumer_info(stream, self.consumer)
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return True  # the queue is gone: nothing more can be delivered
        async with self.pool.connection() as conn:
            publishable = await captures.publishable_count(conn, self.job_id)
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
        async with self.pool.connection() as conn:
            await job_store.save_progress(conn, self.job_id, self.progress, run_id=self.run_id)
        self.last_progress = time.monotonic()
        self.last_touch = self.last_progress
        self.dirty = False

    async def _log(
        self, message: str, *, level: str = "INFO", context: dict[str, Any] | None = None
    ) -> None:
        async with self.pool.connection() as conn:
            await job_store.append_log(conn, self.job_id, message, level=level, context=context)
