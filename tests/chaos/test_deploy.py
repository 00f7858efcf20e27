"""A deploy while a job aggregates (issue 18): the worker process is replaced as a rolling deploy
replaces it (the new one started, the old one sent SIGTERM and given its graceful shutdown) and
the job ends SUCCESS with every image saved exactly once. The time the deploy added is recorded
(``make chaos`` prints it): from the SIGTERM to the next result saved by the new process."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.chaos import (
    RecordingAdc,
    check_exactly_once,
    pick,
    record_recovery,
    seconds_until,
    wait_final,
)
from tests.helpers.db import job_counts
from tests.helpers.jobs import make_job
from tests.helpers.processes import worker_processes
from tests.helpers.settings import SHORT_HEARTBEATS, with_settings
from tests.helpers.temporal import simulated_worker

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("order", ["new first", "old first"])
async def test_a_worker_replaced_while_a_job_aggregates_finishes_it(
    order, pool, temporal_client, settings, nats_client, tmp_path
):
    # The deployed defaults (a graceful shutdown of 30 s, which a waiting aggregator does not
    # sit out: it hands over at once), but for heartbeats short enough for a test.
    settings = with_settings(
        settings,
        jobs=SHORT_HEARTBEATS,
        worker={"graceful_shutdown": timedelta(seconds=30)},
        reconcile={"interval": timedelta(0)},
    )
    total = pick(200, 2000)
    job, seeded, _ = await make_job(pool, images=total)
    adc = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug, batch_size=20, budget=80)
    with worker_processes(settings, tmp_path) as workers:
        old = workers.start()
        async with simulated_worker(adc):
            await JobActions(pool, temporal_client, settings).run(job.id)

            async def committed(n: int) -> bool:
                return (await job_counts(pool, job.id))["processed"] >= n

            await eventually(lambda: committed(80), within=60)
            if order == "new first":
                workers.start()
            stopped = time.monotonic()
            old.stop()
            if order == "old first":
                workers.start()
            adc.answer_more(None)
            record_recovery(
                f"deploy ({order}) in aggregation",
                await seconds_until(stopped, lambda: committed(81)),
            )
            assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc)
