"""Fair share: a small job of another project gets tasks while a big one is running, with fake ADC
workers over HTTP (each works a listed job until ``/tasks/`` answers ``[]``, then polls the listing
again); and the rules themselves, on snapshots."""

from __future__ import annotations

import asyncio
import json

import pytest

from antenna_db.seed import seed
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.fair_share import JobLoad, least_served_first, withheld
from core.settings import FairShareSettings, Settings, settings_env
from core.states import JobState
from tests.helpers import eventually
from tests.helpers.api import api_and_workers, start_over_api
from tests.helpers.db import get_job, job_logs, run_counters

BIG = 2000
SMALL = 24


async def test_small_job_of_another_project_is_served_while_a_big_one_runs(
    settings, pool, temporal_client
):
    async with pool.connection() as conn:
        big_seed = await seed(conn, BIG)
        small_seed = await seed(conn, SMALL)
    assert big_seed.project_id != small_seed.project_id
    async with api_and_workers(settings, pool, temporal_client) as client:
        big = await start_over_api(client, big_seed)
        fakes = [
            FakeWorker(
                FakeWorkerConfig(
                    api_url="http://testserver",
                    token=client.headers["Authorization"].removeprefix("Token "),
                    concurrency=2,
                    batch_size=8,
                    delay=0.05,
                    poll_interval=0.2,
                    pipelines=[big_seed.pipeline_slug, small_seed.pipeline_slug],
                    seed=n,
                ),
                transport=client._transport,
            )
            for n in range(3)
        ]
        runs = [asyncio.create_task(f.run()) for f in fakes]
        try:

            async def big_under_way() -> bool:
                processed, _ = await run_counters(pool, big)
                return processed >= 100

            # Every worker is on the big job now; it would answer them until it is drained.
            await eventually(big_under_way, within=120)
            small = await start_over_api(client, small_seed)

            async def small_done() -> bool:
                return (await get_job(pool, small)).status in {JobState.SUCCESS, JobState.FAILURE}

            await eventually(small_done, within=240)
            big_done_then = sum(await run_counters(pool, big))
            big_status_then = (await get_job(pool, big)).status

            async def big_done() -> bool:
                return (await get_job(pool, big)).status in {JobState.SUCCESS, JobState.FAILURE}

            await eventually(big_done, within=600)
        finally:
            for fake in fakes:
                fake.stop()
            await asyncio.gather(*runs)

    assert (await get_job(pool, small)).status == JobState.SUCCESS
    assert (await get_job(pool, big)).status == JobState.SUCCESS
    # The small job was served while the big one still had work: without fair share no worker
    # leaves the big job before its last task is handed out.
    assert big_status_then == JobState.STARTED
    assert big_done_then < BIG
    assert await run_counters(pool, small) == (SMALL, 0)
    assert await run_counters(pool, big) == (BIG, 0)
    assert sum(f.jobs[small].images for f in fakes if small in f.jobs) == SMALL
    messages = [line["message"] for line in await job_logs(pool, big)]
    assert any("fair share: project" in m for m in messages)


def _loads(*loads: JobLoad) -> dict[int, JobLoad]:
    return {load.job_id: load for load in loads}


def _weight(project_id: int) -> float:
    return 1.0


def _any(load: JobLoad) -> bool:
    return True


def test_a_job_alone_gets_all_the_capacity():
    loads = _loads(JobLoad(1, 10, "p", in_flight=384, waiting=10_000))
    assert withheld(loads, 1, _weight, _any) is None
    # Another project's job that has nothing waiting is no rival.
    loads[2] = JobLoad(2, 20, "p", in_flight=24, waiting=0)
    assert withheld(loads, 1, _weight, _any) is None


def test_a_project_over_its_share_is_withheld_while_another_waits():
    loads = _loads(
        JobLoad(1, 10, "p", in_flight=360, waiting=10_000),
        JobLoad(2, 20, "p", in_flight=0, waiting=200),
    )
    reason = withheld(loads, 1, _weight, _any)
    assert reason is not None and "project 10 holds 360" in reason and "job 2" in reason
    assert withheld(loads, 2, _weight, _any) is None
    # At its share (not over), it is served: the least served is never refused.
    loads[2].in_flight = 180
    loads[1].in_flight = 180
    assert withheld(loads, 1, _weight, _any) is None
    assert withheld(loads, 2, _weight, _any) is None
    # Up to one batch over its share it is still served (no hopping at every batch).
    loads[1].in_flight = 200
    assert withheld(loads, 1, _weight, _any, slack=24) is None
    assert withheld(loads, 1, _weight, _any, slack=0) is not None


def test_weights_divide_the_capacity():
    loads = _loads(
        JobLoad(1, 10, "p", in_flight=250, waiting=1000),
        JobLoad(2, 20, "p", in_flight=100, waiting=1000),
    )

    def weight(project_id: int) -> float:
        return 3.0 if project_id == 10 else 1.0

    # Project 10's share is 3/4 of 350: 262.5.
    assert withheld(loads, 1, weight, _any) is None
    assert withheld(loads, 1, _weight, _any) is not None


def test_within_a_project_the_jobs_share():
    loads = _loads(
        JobLoad(1, 10, "p", in_flight=90, waiting=500),
        JobLoad(2, 10, "p", in_flight=6, waiting=500),
    )
    reason = withheld(loads, 1, _weight, _any)
    assert reason is not None and reason.startswith("job 1 holds 90")
    assert withheld(loads, 2, _weight, _any) is None


def test_a_job_no_worker_lists_holds_nobody_back():
    loads = _loads(
        JobLoad(1, 10, "p", in_flight=300, waiting=1000),
        JobLoad(2, 20, "unserved", in_flight=0, waiting=1000),
    )
    assert withheld(loads, 1, _weight, lambda load: load.pipeline_slug == "p") is None


def test_the_listing_puts_the_least_served_jobs_first():
    loads = _loads(
        JobLoad(1, 10, "p", in_flight=300, waiting=1000),
        JobLoad(2, 20, "p", in_flight=24, waiting=100),
        JobLoad(3, 20, "p", in_flight=0, waiting=100),
        JobLoad(4, 30, "p", in_flight=5, waiting=0),
    )
    rows = [(4, 30), (1, 10), (2, 20), (3, 20), (5, 40)]
    # Waiting jobs first, by their project's tasks in flight then their own; then the rest.
    assert least_served_first(loads, rows, _weight) == [3, 2, 1, 4, 5]


def test_weights_setting_reaches_a_child_process_as_json(monkeypatch):
    settings = Settings(fair_share=FairShareSettings(weights={12: 3, 15: 0.5}))
    env = settings_env(settings)
    assert json.loads(env["ANTENNA_JOBS_FAIR_SHARE_WEIGHTS"]) == {"12": 3.0, "15": 0.5}
    monkeypatch.setenv("ANTENNA_JOBS_FAIR_SHARE_WEIGHTS", env["ANTENNA_JOBS_FAIR_SHARE_WEIGHTS"])
    again = FairShareSettings()
    assert again.weight(12) == 3.0 and again.weight(15) == 0.5 and again.weight(99) == 1.0
    with pytest.raises(ValueError):
        FairShareSettings(weights={1: 0})
