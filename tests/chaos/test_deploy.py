"""A deploy while a job aggregates (issue 18): the worker process is replaced as a rolling deploy
replaces it (the new one started, the old one sent SIGTERM and given its graceful shutdown) and
the job ends SUCCESS with every image saved exactly once. The time the deploy added is recorded
(``make chaos`` prints it): from the SIGTERM to the next result saved by the new process."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core.states import JobState
from tests.helpers.chaos import (
    check_exactly_once,
    pick,
    processed_at_least,
    record_recovery_when,
    wait_final,
)
from tests.helpers.settings import SHORT_HEARTBEATS, with_settings

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("order", ["new first", "old first"])
async def test_a_worker_replaced_while_a_job_aggregates_finishes_it(
    order, pool, settings, under_way
):
    # The deployed defaults (a graceful shutdown of 30 s, which a waiting aggregator does not
    # sit out: it hands over at once), but for heartbeats short enough for a test.
    settings = with_settings(
        settings,
        jobs=SHORT_HEARTBEATS,
        worker={"graceful_shutdown": timedelta(seconds=30)},
        reconcile={"interval": timedelta(0)},
    )
    async with under_way(pick(200, 2000), 80, batch_size=20, settings=settings) as on:
        job, adc, workers, old = on.job, on.adc, on.workers, on.first
        if order == "new first":
            workers.start()
        stopped = time.monotonic()
        old.stop()
        if order == "old first":
            workers.start()
        adc.answer_more(None)
        await record_recovery_when(
            f"deploy ({order}) in aggregation",
            stopped,
            lambda: processed_at_least(pool, job.id, 81),
        )
        assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc)
