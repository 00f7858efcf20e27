"""Aggregate: drain the job's result inbox until every image is processed or failed.

Long-running and heartbeating on the long task queue. The aggregator is the single writer of the
job's progress while it runs (activities/ml_run.py), keeps the Redis pending/failed sets in step,
reconciles images whose task exhausted max_deliver, and after ``stall_period`` without movement
(with every task delivered; time paused does not count) counts the rest failed. While the run
is paused the process stage shows a "Paused" param. A job row saying CANCELING/REVOKED stops it.
While it waits it costs no query of its own (activities/async_api/inbox_watch.py) and has the
row's ``updated_at`` bumped every ``touch_interval``, so Antenna's reaper (if it still runs) never
takes the job for dead. A save refused because Antenna's schema changed keeps its results in the
inbox and is tried again with backoff until the schema is compatible
(activities/schema_wait.py); meanwhile nothing counts as stalled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from temporalio import activity

from activities.async_api.inbox_watch import InboxWatch, Watch
from activities.async_api.job_state_cache import JobStateCache
from activities.async_api.lost_images import MaxDeliveriesWatcher, TaskLookup
from activities.async_api.models import AggregateInput, AggregateResult
from activities.async_api.serving import ServingNote
from activities.crops import CropRequests
from activities.heartbeat import heartbeating, run_id
from activities.jobs import PoolActivities
from activities.ml_run import LOGGED_IMAGE_IDS, WORKERS_PARAM, MlRun
from activities.result_saver import BatchOutcome, SchemaBlocked
from activities.schema_wait import SchemaWait
from antenna_db import captures, job_store
from antenna_db.job_store import RunState
from core.errors import Failure, failure
from core.settings import Settings
from core.states import CANCEL_STATES, FINAL_STATES
from storage import inbox, job_images, job_runs
from storage.pool import Pool

# How often an aggregator checks that the job's Redis sets still exist (a flush is rare).
CACHE_CHECK_EVERY = 30.0
# The shortest wait between wakes (seconds): a progress write already due waits this long rather
# than none, so the loop never spins.
SHORTEST_WAIT = 0.05


class ResultActivities(PoolActivities):
    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        js: JetStreamContext,
        redis: aioredis.Redis,
        settings: Settings,
        crops: CropRequests | None = None,
        watch: InboxWatch | None = None,
        request_schema_check: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(pool, settings)
        # Asks this process's schema check to run now (after a save refused for the schema).
        self._request_schema_check = request_schema_check
        self._nc = nc
        self._js = js
        self._lookup = TaskLookup(js)
        self._crops = crops or CropRequests()
        self._cache = JobStateCache(
            redis, int(settings.redis.key_ttl.total_seconds()), settings.jobs.names
        )
        self._watch = watch or InboxWatch(
            pool, settings.database, settings.jobs.heartbeat_interval.total_seconds()
        )

    @activity.defn(name="aggregate_results")
    async def aggregate_results(self, inp: AggregateInput) -> AggregateResult:
        run = MlRun(self._pool, self._settings.jobs, self._crops, inp.job_id, run_id())
        await run.load()
        with self._watch.watch(inp.job_id) as watch:
            aggregation = _Aggregation(
                run,
                self._pool,
                self._nc,
                self._js,
                self._lookup,
                self._cache,
                watch,
                self._settings,
            )
            aggregation.schema.request_check = self._request_schema_check
            return await aggregation.run()


def _says_waiting(run: MlRun) -> bool:
    try:
        return run.progress.stage("process").param(WORKERS_PARAM) is not None
    except KeyError:
        return False


@dataclass(eq=False)
class _Aggregation:
    """One attempt of aggregate_results for one job; its state lives as long as the attempt.

    It sleeps on its Watch (activities/async_api/inbox_watch.py) between batches: woken when
    results arrive or a MAX_DELIVERIES advisory comes, and once per heartbeat interval with the
    job's state as the process-wide read found it, so a waiting job makes no query of its own.
    """

    ml: MlRun
    pool: Pool
    nc: NatsClient
    js: JetStreamContext
    lookup: TaskLookup
    cache: JobStateCache
    watch: Watch
    settings: Settings

    def __post_init__(self) -> None:
        run, lookup, settings = self.ml, self.lookup, self.settings
        self.names = settings.jobs.names
        self.jobs = settings.jobs
        self.job_id = run.job_id
        self.result = AggregateResult(counters=run.counters)
        self.saver = run.saver(lookup.image_for_reply)
        # The first check waits: publish creates the Redis keys meanwhile, and a rebuild is
        # only for keys that went missing later (a flush).
        self.last_cache_check = time.monotonic()
        self.last_touch = self.last_cache_check
        # Whether the job says it is waiting for workers: True once it said so (also by an
        # earlier attempt of this run: the param is in the progress), False once a worker was
        # seen, None before either.
        self.waiting_for_workers: bool | None = True if _says_waiting(run) else None
        # The window for "waiting for workers" counts from here: the tasks are being published.
        self.queued_at = time.monotonic()
        # The stall rule found undelivered tasks while waiting for workers (logged once).
        self.stall_deferred = False
        # The last poll age the watch reported, and when a worker's result was last saved
        # (an answer shows a worker as well as a poll does).
        self.poll_age: float | None = None
        self.last_answer: float | None = None
        # Saves refused for a schema reason wait here; failures of exhausted tasks taken from
        # the watcher meanwhile are carried to the next try.
        self.schema = SchemaWait(run, self.jobs.schema_retry_max.total_seconds())
        self.carry: dict[int, str] = {}
        # Who serves the job (progress params, idle log lines).
        self.serving = ServingNote(run, settings.jobs)

    async def run(self) -> AggregateResult:
        run = self.ml
        watcher = MaxDeliveriesWatcher(
            self.nc,
            self.names.max_deliveries_advisory(self.job_id, run.consumer),
            on_advisory=self.watch.wake,
        )
        await watcher.start()
        # A deploy stops this worker: a waiting aggregator hands over at once (the next attempt
        # starts on another worker) instead of idling through the graceful shutdown.
        shutdown = asyncio.create_task(self._wake_on_shutdown())
        # The final writes heartbeat too: the sessions' and stations' counts of a 100k-image job
        # on big tables take longer than the heartbeat timeout, and an attempt timed out there
        # was retried straight into the same refresh, for ever.
        async with heartbeating(self.jobs.heartbeat_interval, lambda: run.counters):
            try:
                await self._loop(watcher)
            finally:
                shutdown.cancel()
                await watcher.stop()
            if self.waiting_for_workers:
                # Answers since the last read: the job is not left saying it waits.
                await self._note_workers(self.poll_age)
            await run.finish()
        self.result.counters = run.counters
        return self.result

    async def _loop(self, watcher: MaxDeliveriesWatcher) -> None:
        run, batch = self.ml, self.jobs.aggregate_batch_size
        look = True  # results may be waiting: claim before sleeping
        while run.counters.done < run.counters.total:
            exhausted = await self._exhausted(watcher)
            if look or exhausted:
                outcome = await self._save(batch, exhausted)
                await self._apply(outcome)
                if exhausted and not self.schema.blocked:
                    self.result.reconciled += len(set(outcome.failed) & exhausted.keys())
                    await run.log(
                        f"{len(exhausted)} tasks exhausted max_deliver"
                        f" ({self.settings.nats.max_deliver}) without a result: counted failed",
                        level="WARNING",
                        context={"image_ids": sorted(exhausted)[:LOGGED_IMAGE_IDS]},
                    )
                await run.maybe_write_progress()
                if outcome.claimed >= batch:
                    await self._drain(batch)  # more are waiting
                    continue
            if run.counters.done >= run.counters.total:
                break
            if self._paused():
                run.last_change = time.monotonic()  # a paused job is waiting, not stalled
            if time.monotonic() - run.last_change >= self.jobs.stall_period.total_seconds():
                await self._reconcile_stall()
                look = True
                continue
            # While saves wait for the schema, each wake tries again (after _save's backoff).
            look = await self.watch.wait(self._wait_for()) or self.schema.blocked
            if activity.is_worker_shutdown():
                raise failure(Failure.WORKER_SHUTDOWN, "the worker is shutting down: handed over")
            await self._after_wait()
            await run.maybe_write_progress()

    async def _wake_on_shutdown(self) -> None:
        await activity.wait_for_worker_shutdown()
        self.watch.wake()

    async def _drain(self, batch: int) -> None:
        """Save full batches with ``aggregate_lanes`` of them in flight until the inbox has
        less than a batch left; the first failure (a cancel, an outage) stops every lane."""
        progress = asyncio.Lock()

        async def lane() -> None:
            while self.ml.counters.done < self.ml.counters.total:
                outcome = await self._save(batch, {})
                await self._apply(outcome)
                async with progress:
                    await self.ml.maybe_write_progress()
                if outcome.claimed < batch:
                    return

        lanes = [asyncio.create_task(lane()) for _ in range(self.jobs.aggregate_lanes)]
        try:
            await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        for task in lanes:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _paused(self) -> bool:
        seen = self.watch.seen
        return seen is not None and seen.paused

    def _show_paused(self) -> None:
        """The progress says whether the run is paused, as the last read found it."""
        paused = self._paused()
        if self.ml.progress.paused != paused:
            self.ml.progress.show_paused(paused)
            self.ml.dirty = True

    def _wait_for(self) -> float:
        """Until the next heartbeat-interval read, or sooner when a progress write is due."""
        interval = self.jobs.heartbeat_interval.total_seconds()
        if not self.ml.dirty:
            return interval
        due = self.jobs.progress_interval.total_seconds() - (
            time.monotonic() - self.ml.last_progress
        )
        return min(interval, max(due, SHORTEST_WAIT))

    async def _apply(self, outcome: BatchOutcome) -> None:
        if outcome.processed:
            self.last_answer = time.monotonic()
        if await self.ml.apply(outcome):
            await self.cache.mark_done(self.job_id, outcome.processed, outcome.failed)

    async def _save(self, batch: int, exhausted: dict[int, str]) -> BatchOutcome:
        """One batch, saved only while the job is not cancelled or final.

        The job row is read FOR SHARE in the batch's transaction, so a status change waits for
        the batch to commit or is seen by it: no result is ever saved after CANCELING (and so
        after REVOKED), even by an attempt Temporal already gave up on. Idle polls skip it.
        """
        exhausted, self.carry = self.carry | exhausted, {}
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if not exhausted and not await inbox.waiting(conn, self.job_id):
                    return BatchOutcome()
                self._check_row(await job_store.run_state(conn, self.job_id, share=True))
                outcome = await self.saver.save_batch(conn, batch, exhausted)
        except SchemaBlocked as err:
            # Rolled back whole: the rows stay in the inbox, unclaimed and uncounted.
            self.carry |= exhausted
            await self._pause(await self.schema.refused(err))
            return BatchOutcome()
        if outcome.claimed or exhausted:
            await self.schema.saved()
        return outcome

    async def _pause(self, seconds: float) -> None:
        """Wait before saving again, stopping at once for a cancel (the heartbeat brings
        Temporal's; the process-wide read, the job row's)."""
        interval = self.jobs.heartbeat_interval.total_seconds()
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, interval))
            if activity.is_worker_shutdown():
                raise failure(Failure.WORKER_SHUTDOWN, "the worker is shutting down: handed over")
            seen = self.watch.seen
            if seen is not None:
                self._check_row(RunState(status=seen.status, run_id=seen.run_id, consumer=None))

    def _check_row(self, state: RunState) -> None:
        """Stop when the job is cancelled (or final), or when another run took it since this
        attempt began: then this is an attempt of a run that is over (terminated, say) and the
        new run's aggregator owns the job."""
        if state.run_id != self.ml.run_id:
            raise self.ml.stale()
        if state.status in CANCEL_STATES or state.status in FINAL_STATES:
            raise failure(Failure.JOB_CANCELLED, f"job {self.job_id} is {state.status}")

    async def _after_wait(self) -> None:
        """The job as the last process-wide read saw it: cancelled or taken by another run stops
        here; results saved by another attempt (one Temporal gave up on, still finishing a
        batch) are counted from Postgres, so this attempt never waits for images already done.
        Now and then: flushed Redis state is rebuilt, and an idle job's row is touched."""
        seen = self.watch.seen
        if seen is not None:
            self._check_row(RunState(status=seen.status, run_id=seen.run_id, consumer=None))
            if seen.done > self.ml.counters.done:
                await self.ml.reload_counters()
            await self._note_workers(seen.poll_age)
            await self.serving.note(seen.workers)
            self._show_paused()
            if seen.paused:
                self.ml.last_change = time.monotonic()
        now = time.monotonic()
        if now - self.last_cache_check >= CACHE_CHECK_EVERY:
            self.last_cache_check = now
            if not await self.cache.exists(self.job_id):
                async with self.pool.connection() as conn:
                    await self.cache.rebuild(conn, self.job_id)
        if now - max(self.last_touch, self.ml.last_progress) >= (
            self.jobs.touch_interval.total_seconds()
        ):
            self.last_touch = now
            self.watch.request_touch()

    async def _note_workers(self, poll_age: float | None) -> None:
        """Say in the progress and the log when no processing worker has polled the job's
        pipeline (or answered a task) for the window since its tasks were queued, and, only
        after that was said, when one does again; nothing is written while the answer stays the
        same, nor before the window has passed."""
        window = self.jobs.workers_seen_window.total_seconds()
        self.poll_age = poll_age
        seen = [a for a in (poll_age, self._answer_age()) if a is not None]
        queued_for = time.monotonic() - self.queued_at
        if seen and min(seen) <= window:
            waiting = False
        elif queued_for >= window:
            waiting = True
        else:
            return  # no worker yet, but the window since the tasks were queued is not over
        if waiting == self.waiting_for_workers:
            return
        said_waiting = self.waiting_for_workers is True
        self.waiting_for_workers = waiting
        if not waiting and not said_waiting:
            return  # workers from the start: nothing to say
        self.ml.set_waiting_for_workers(waiting)
        # At once (a rare change): the progress says it as soon as the log does.
        await self.ml.write_progress()
        slug = self.ml.pipeline.slug
        if waiting:
            when = (
                f"in the {queued_for / 60:.1f} min since its tasks were queued"
                if poll_age is None or poll_age > queued_for
                else f"for {poll_age / 60:.1f} min"
            )
            await self.ml.log(
                f"Waiting for workers: no processing worker has asked for tasks of pipeline"
                f" {slug} {when} (window {window:.0f} s); its tasks stay queued and are not"
                " counted as stalled",
                level="WARNING",
                context={"pipeline": slug, "poll_age_seconds": poll_age},
            )
        else:
            self.stall_deferred = False
            await self.ml.log(f"Workers are back for pipeline {slug}: tasks are fetched again")

    def _answer_age(self) -> float | None:
        return None if self.last_answer is None else time.monotonic() - self.last_answer

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
            # Undelivered tasks are waiting for a worker (or their turn), not stalled.
            self.ml.last_change = time.monotonic()
            if self.waiting_for_workers and not self.stall_deferred:
                self.stall_deferred = True
                await self.ml.log(
                    f"No result for {self.jobs.stall_period.total_seconds() / 60:.1f} min while"
                    " waiting for workers: tasks undelivered, nothing counted failed"
                )
            return
        minutes = self.jobs.stall_period.total_seconds() / 60
        reason = f"no result for {minutes:.1f} min after every task was delivered"
        async with self.pool.connection() as conn, conn.transaction():
            failed = await job_images.fail_pending(conn, self.job_id, reason)
            await job_runs.add(conn, self.job_id, failed=len(failed))
        await self._apply(BatchOutcome(failed=failed))
        self.result.reconciled += len(failed)
        self.result.stalled = True
        await self.ml.log(
            f"Stalled: {len(failed)} images counted failed ({reason})",
            level="WARNING",
            context={"image_ids": failed[:LOGGED_IMAGE_IDS], "count": len(failed)},
        )

    async def _all_delivered(self) -> bool:
        stream = self.names.stream(self.job_id)
        try:
            consumer = await self.js.consumer_info(stream, self.ml.consumer)
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return True  # the queue is gone: nothing more can be delivered
        async with self.pool.connection() as conn:
            publishable = await captures.publishable_count(conn, self.job_id)
        return consumer.num_pending == 0 and info.state.messages >= publishable
