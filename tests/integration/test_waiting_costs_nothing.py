"""A waiting job costs next to nothing: its aggregator makes no query of its own while no result
arrives (one read per heartbeat interval serves every waiting job of the process), and a result
wakes it at once (NOTIFY), not at the next interval.

Counted, not timed: database work is counted as pool checkouts, so a slow machine can only make
fewer of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.async_api.inbox_watch import InboxWatch
from activities.async_api.models import AggregateInput
from activities.async_api.results import ResultActivities
from activities.images import ImageActivities
from activities.models import CollectInput
from core.states import JobState
from storage import inbox
from tests.helpers import eventually
from tests.helpers.jobs import inbox_entries, made_run_id, make_job
from tests.helpers.settings import with_settings
from worker.resources import Resources

WAITING_JOBS = 12


class CountingPool:
    """The real pool, counting the connections taken from it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.checkouts = 0

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        self.checkouts += 1
        async with self._pool.connection() as conn:
            yield conn


async def _aggregator(results: ResultActivities, job_id: int, total: int) -> asyncio.Task[Any]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_run_id=made_run_id(job_id))
    return asyncio.create_task(
        env.run(results.aggregate_results, AggregateInput(job_id=job_id, total=total))
    )


async def test_waiting_aggregators_share_one_read_per_interval_and_wake_on_results(pool, settings):
    interval = 0.5
    local = with_settings(settings, jobs={"heartbeat_interval": timedelta(seconds=interval)})
    resources = await Resources.open(local, run_migrations=False)
    counting = CountingPool(resources.pool)
    watch = InboxWatch(counting, local.database, interval)  # type: ignore[arg-type]
    results = ResultActivities(
        counting,  # type: ignore[arg-type]
        resources.nc,
        resources.js,
        resources.redis,
        local,
        watch=watch,
    )
    jobs = [await make_job(pool, images=2, status=JobState.STARTED) for _ in range(WAITING_JOBS)]
    collect = ImageActivities(resources.pool, local).collect_images
    for job in jobs:
        await ActivityEnvironment().run(collect, CollectInput(job_id=job.id))
    running = [await _aggregator(results, job.id, 2) for job in jobs]
    try:
        await eventually(watch.listening.wait, within=30)
        await asyncio.sleep(3 * interval)  # every aggregator past its start-up loads
        before = counting.checkouts
        window = 12 * interval
        await asyncio.sleep(window)
        waited = counting.checkouts - before
        # One shared read per interval (plus one for the interval in progress); polling as
        # before would be several per job and interval.
        assert waited <= window / interval + 2, waited
        assert not any(task.done() for task in running)

        # A result wakes its aggregator at once, not after a (now very long) interval.
        watch.interval = 3600.0
        await asyncio.sleep(2 * interval)  # the read loop now sleeps for an hour
        first = jobs[0]
        async with pool.connection() as conn:
            await inbox.store(conn, first.id, inbox_entries(first))
        done = await asyncio.wait_for(running[0], timeout=30)
        assert done.counters.processed == 2
        assert not any(task.done() for task in running[1:])
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await watch.stop()
        await resources.close()
