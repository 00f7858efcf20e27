"""TaskFetcher edge cases against real NATS: messages a subscription buffered after a fetch gave
up are handed out later, never lost, never twice, and never more than asked for."""

from __future__ import annotations

import json

import nats

from api.task_fetcher import TaskFetcher
from core.states import JobState
from tests.helpers import eventually
from tests.helpers.db import NAMES
from tests.helpers.jobs import made_consumer, make_job


async def test_buffered_deliveries_become_spare_tasks(settings, pool, streams):
    job = await make_job(pool, images=10, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    nc = await nats.connect(settings.nats.url)
    fetcher = TaskFetcher(nc, settings.nats, NAMES)
    try:
        seen = [m.reply for m in await fetcher.fetch(job.id, made_consumer(job.id), 1)]
        (sub,) = fetcher._jobs[job.id].idle
        # A late answer to a pull request lands in the idle subscription: 3 buffered messages.
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{NAMES.stream(job.id)}.{made_consumer(job.id)}",
            json.dumps({"batch": 3, "no_wait": True}).encode(),
            reply=sub._deliver,
        )

        async def buffered() -> bool:
            return sub.pending_msgs >= 3

        await eventually(buffered)
        two = await fetcher.fetch(job.id, made_consumer(job.id), 2)
        assert len(two) == 2
        assert len(fetcher._jobs[job.id].spare) == 2  # 3 buffered + 1 asked for, 2 handed out
        three = await fetcher.fetch(job.id, made_consumer(job.id), 3)
        assert len(three) == 3
        rest = await fetcher.fetch(job.id, made_consumer(job.id), 10)
        seen += [m.reply for m in two + three + rest]
        assert len(seen) == len(set(seen)) == 10
        assert await fetcher.fetch(job.id, made_consumer(job.id), 5) == []
        info = await streams.consumer(job.id)
        assert info.num_ack_pending == 10 and info.num_redelivered == 0
    finally:
        await fetcher.close()
        await nc.drain()


async def test_forget_and_absent_consumers(settings, pool, streams):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    nc = await nats.connect(settings.nats.url)
    fetcher = TaskFetcher(nc, settings.nats, NAMES, max_jobs=1)
    try:
        assert await fetcher.fetch(job.id, made_consumer(job.id), 1) == []  # no stream yet
        assert job.id not in fetcher._jobs
        await streams.publish(job.id, job.images)
        assert len(await fetcher.fetch(job.id, made_consumer(job.id), 1)) == 1
        other = await make_job(pool, images=1, status=JobState.STARTED)
        await streams.publish(other.id, other.images)
        assert len(await fetcher.fetch(other.id, made_consumer(other.id), 1)) == 1
        assert list(fetcher._jobs) == [other.id]  # least recently used job evicted
        assert (
            len(await fetcher.fetch(job.id, made_consumer(job.id), 5)) == 1
        )  # and rebound on demand
        await fetcher.forget(job.id)
        assert job.id not in fetcher._jobs
    finally:
        await fetcher.close()
        await nc.drain()
