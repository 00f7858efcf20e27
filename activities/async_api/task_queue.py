"""The job's task queue in NATS JetStream (stream job_{id} and durable pull consumer
job-{id}-consumer, Antenna's names, made anew by each run) and
the Redis pending state that goes with it: reset, prepare, publish, cleanup.

Publishing resumes from its heartbeat checkpoint; a page is checkpointed only after every publish
in it was acked, and a re-published page is dropped by JetStream's duplicate window because each
message carries Nats-Msg-Id = the image id.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError
from temporalio import activity

from activities.async_api.job_state_cache import JobStateCache
from activities.async_api.models import PublishCheckpoint, PublishInput, PublishResult
from activities.async_api.publisher import JetStreamPublisher, PageAcks
from activities.heartbeat import heartbeating, resume_details, run_id
from activities.jobs import PoolActivities
from activities.models import JobRef
from antenna_db import captures, job_store
from antenna_db.capture_urls import NO_URL_ERROR
from core import json_codec
from core.result_payload import error_payload
from core.settings import Settings
from storage import inbox, job_runs
from storage.inbox import InboxEntry
from storage.pool import Pool

_TASK = b'{"id":"%d","image_id":"%d","image_url":%b,"reply_subject":null}'


def task_message(image_id: int, url: str) -> bytes:
    """The task body the ADC worker expects (reply_subject is filled in when it is fetched):
    PipelineProcessingTask's JSON, its URL written by msgspec (a pydantic model per message was
    a sixth of the publish time; tests check both give the same bytes)."""
    return _TASK % (image_id, image_id, json_codec.dumps(url))


class TaskQueueActivities(PoolActivities):
    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        redis: aioredis.Redis,
        pool: Pool,
        settings: Settings,
    ) -> None:
        super().__init__(pool, settings)
        # ``nc``: the connection of ``js``, on which the publisher awaits its PubAcks itself.
        self._nc = nc
        self._js = js
        self._cache = JobStateCache(redis, int(settings.redis.key_ttl.total_seconds()), self._names)

    async def remove(self, job_id: int) -> None:
        """Delete the stream (its consumers go with it), Redis keys and results not yet
        aggregated (posted before a cancel, or for a run that is over); whatever is already
        gone counts as removed."""
        with suppress(NotFoundError):
            await self._js.delete_stream(self._names.stream(job_id))
        await self._cache.delete(job_id)
        async with self._pool.connection() as conn:
            await inbox.remove_job(conn, job_id)

    @activity.defn(name="reset_job_queue")
    async def reset_job_queue(self, ref: JobRef) -> None:
        """Remove what a previous run of this job left behind (no duplicates on retry, #1283)."""
        await self.remove(ref.job_id)

    @activity.defn(name="cleanup_job_queue")
    async def cleanup_job_queue(self, ref: JobRef) -> None:
        await self.remove(ref.job_id)

    @activity.defn(name="prepare_job_queue")
    async def prepare_job_queue(self, ref: JobRef) -> None:
        """Create the job's stream and this run's durable pull consumer (same config again is a
        no-op). The consumer has Antenna's name, so Antenna's Job.cancel finds and deletes it
        without an error in the job (core/naming.py says how runs are told apart)."""
        nats = self._settings.nats
        stream = self._names.stream(ref.job_id)
        async with self._pool.connection() as conn:
            run = await job_runs.get(conn, ref.job_id)
        # The name start_job recorded for this run (a run started by an older release keeps the
        # one it was given); Antenna's name otherwise.
        consumer = (
            run.consumer
            if run is not None and run.run_id == run_id()
            else self._names.consumer(ref.job_id)
        )
        await self._js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[self._names.subject(ref.job_id)],
                max_age=nats.stream_max_age.total_seconds(),
                duplicate_window=nats.duplicate_window.total_seconds(),
                # The API finds a task's image from its ack subject with a direct get.
                allow_direct=True,
            )
        )
        await self._js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=consumer,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=nats.ack_wait.total_seconds(),
                max_deliver=nats.max_deliver,
                max_ack_pending=nats.max_ack_pending,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=self._names.subject(ref.job_id),
            ),
        )

    @activity.defn(name="publish_tasks")
    async def publish_tasks(self, inp: PublishInput) -> PublishResult:
        state = resume_details(PublishCheckpoint) or PublishCheckpoint()
        if state.last_ordinal > inp.total:
            state = PublishCheckpoint()
        resumed_from = state.last_ordinal
        started = time.monotonic()
        nats = self._settings.nats
        publisher = JetStreamPublisher(
            self._nc, nats.publish_window, nats.publish_ack_timeout.total_seconds()
        )
        # Pages overlap: the next page is read while this one publishes, and the window spans
        # page boundaries. The checkpoint only moves past a page once it and every page before
        # it have all their acks, so a resumed attempt never skips an unacked message.
        in_flight: deque[tuple[PageAcks, PublishCheckpoint]] = deque()
        submitted = state
        next_page = asyncio.ensure_future(self._read_page(inp.job_id, state.last_ordinal))

        def latest() -> PublishCheckpoint:
            """The checkpoint, moved past every page fully acked by now (also while the loop
            waits on a slow page read: a retry then republishes as little as possible)."""
            nonlocal state
            while in_flight and _acked(in_flight[0][0].done):
                _, state = in_flight.popleft()
            return state

        async with publisher, heartbeating(self._settings.jobs.heartbeat_interval, latest):
            try:
                while True:
                    rows, no_url = await next_page
                    if not rows:
                        break
                    next_page = asyncio.ensure_future(
                        self._read_page(inp.job_id, rows[-1]["ordinal"])
                    )
                    with_url = [r for r in rows if r["url"]]
                    # Pending state exists before any of its tasks can be fetched and answered.
                    await self._cache.add_pending(
                        inp.job_id, (r["source_image_id"] for r in with_url), inp.total
                    )
                    acks = await self._submit_page(inp.job_id, with_url, publisher)
                    submitted = PublishCheckpoint(
                        last_ordinal=rows[-1]["ordinal"],
                        published=submitted.published + len(with_url),
                        no_url=submitted.no_url + no_url,
                    )
                    in_flight.append((acks, submitted))
                    while in_flight and in_flight[0][0].done.done():
                        done, state = in_flight.popleft()
                        done.done.result()
                while in_flight:
                    done, checkpoint = in_flight.popleft()
                    await publisher.acked(done)
                    state = checkpoint
            finally:
                next_page.cancel()
                for done, _ in in_flight:
                    done.done.cancel()
        seconds = time.monotonic() - started
        count = state.published
        async with self._pool.connection() as conn:
            resumed = f", resumed after ordinal {resumed_from}" if resumed_from else ""
            await job_store.append_log(
                conn,
                inp.job_id,
                f"Published {count} tasks to stream {self._names.stream(inp.job_id)}"
                f" in {seconds:.1f} s ({count / max(seconds, 1e-6):.0f} msgs/s{resumed})",
                context=state.model_dump(),
            )
            if state.no_url:
                await job_store.append_log(
                    conn,
                    inp.job_id,
                    f"{state.no_url} images have no URL and are counted failed",
                    level="WARNING",
                )
        return PublishResult(published=count, no_url=state.no_url, seconds=seconds)

    async def _read_page(self, job_id: int, after: int) -> tuple[list[dict[str, Any]], int]:
        """The next page of the job's images after ordinal ``after``, and how many had no URL."""
        async with self._pool.connection() as conn:
            rows = await captures.image_page(
                conn, job_id, after, self._settings.jobs.publish_page_size
            )
            no_url = [r["source_image_id"] for r in rows if not r["url"]]
            if no_url:
                # Failed through the inbox, so the aggregator stays their only counter.
                await inbox.store(conn, job_id, [_no_url_entry(i) for i in no_url])
        return rows, len(no_url)

    async def _submit_page(
        self, job_id: int, rows: list[dict[str, Any]], publisher: JetStreamPublisher
    ) -> PageAcks:
        """Send a page's publishes (at most the publisher's window awaiting acks); the page's
        ``done`` resolves with its last ack."""
        subject = self._names.subject(job_id)
        page = PageAcks()
        for row in rows:
            image_id = row["source_image_id"]
            await publisher.publish(
                subject, task_message(image_id, row["url"]), str(image_id), page
            )
        page.seal()
        return page


def _acked(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _no_url_entry(image_id: int) -> InboxEntry:
    return InboxEntry(
        image_id=image_id,
        reply_subject="",
        is_error=True,
        payload=error_payload(image_id, NO_URL_ERROR),
    )
