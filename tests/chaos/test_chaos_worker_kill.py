"""SIGKILL the worker process in every phase; a new worker process finishes the job, with every
image processed exactly once (rows, counters) and no task message published twice.

Each kill happens at a known point: the worker's own statement is held inside PostgreSQL by a
test-only trigger (tests/helpers/chaos.py) until the process is dead. Recovery time is measured
from the kill to the interrupted phase moving again on the new process.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

import pytest
from nats.js.errors import NotFoundError

from antenna_db import job_store
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.chaos import (
    RecordingAdc,
    check_exactly_once,
    hold_collect,
    hold_finalize,
    hold_no_url_failure,
    hold_saves,
    pick,
    processed_at_least,
    record_recovery,
    record_recovery_when,
    wait_final,
)
from tests.helpers.db import NAMES, job_counts
from tests.helpers.jobs import make_job
from tests.helpers.processes import worker_processes
from tests.helpers.settings import with_crashes
from tests.helpers.temporal import simulated_worker

pytestmark = pytest.mark.chaos
RUNS = range(pick(1, 3))


@pytest.fixture
def settings(settings):
    """Crashes are noticed within seconds: short heartbeats and short-activity attempts."""
    return with_crashes(settings, jobs={"publish_page_size": 50})


async def count(pool, sql: str, *args) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, args)
        return int((await cur.fetchone())["n"])


@pytest.mark.parametrize("run", RUNS)
async def test_kill_during_collect(run, pool, temporal_client, settings, nats_client, tmp_path):
    job, seeded, _ = await make_job(pool, images=pick(200, 2000))
    adc = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug)
    with worker_processes(settings, tmp_path) as workers:
        async with hold_collect(settings, job.id) as hold:
            first = workers.start()
            await JobActions(pool, temporal_client, settings).run(job.id)
            await hold.wait_blocked()
            first.kill()
            killed = time.monotonic()
            workers.start()
            # The dead process's statement rolls back; the next attempt collects again.
            await hold.release()

            async def collected():
                sql = "SELECT count(*) AS n FROM job_images WHERE job_id = %s"
                return await count(pool, sql, job.id) > 0

            await record_recovery_when("worker SIGKILL in collect", killed, collected)
        async with simulated_worker(adc):
            assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc)


@pytest.mark.parametrize("run", RUNS)
async def test_kill_during_publish(run, pool, temporal_client, settings, nats_client, tmp_path):
    page = settings.jobs.publish_page_size
    job, seeded, _ = await make_job(pool, images=pick(300, 3000), shuffle=False)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s"
            " ORDER BY source_image_id OFFSET %s LIMIT 1",
            (seeded.collection_id, 2 * page + page // 2),
        )
        no_url = (await cur.fetchone())["source_image_id"]
        await conn.execute(
            "UPDATE main_sourceimage SET public_base_url = NULL WHERE id = %s", (no_url,)
        )
    adc = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug)
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
    js = nats_client.jetstream()
    with worker_processes(settings, tmp_path) as workers:
        async with simulated_worker(adc), hold_no_url_failure(settings, job.id, no_url) as hold:
            first = workers.start()
            await JobActions(pool, temporal_client, settings).run(job.id)
            await hold.wait_blocked()  # two pages published, the third one held

            async def checkpointed():
                desc = await handle.describe()
                for act in desc.raw_description.pending_activities:
                    details = act.heartbeat_details.payloads
                    if act.activity_type.name == "publish_tasks" and details:
                        return json.loads(details[0].data)["last_ordinal"] == 2 * page
                return False

            await eventually(checkpointed, within=30)
            first.kill()
            killed = time.monotonic()
            workers.start()
            await hold.release()

            async def publishing_again():
                info = await js.stream_info(NAMES.stream(job.id))
                return info.state.messages > 2 * page

            await record_recovery_when("worker SIGKILL in publish", killed, publishing_again)
            assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc, failed={no_url})
    async with pool.connection() as conn:
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 50)]
    assert any(f"resumed after ordinal {2 * page}" in m for m in logs), logs


@pytest.mark.parametrize("run", RUNS)
async def test_kill_during_aggregation(run, pool, settings, under_way):
    async with under_way(pick(200, 2000), 80, batch_size=20, settings=settings) as on:
        job, adc, workers = on.job, on.adc, on.workers
        async with hold_saves(settings, job.id) as hold:
            adc.answer_more(40)
            await hold.wait_blocked()  # a batch claimed, saving, not committed
            on.first.kill()
            killed = time.monotonic()
            workers.start()
        assert (await job_counts(pool, job.id))["processed"] == 80
        await record_recovery_when(
            "worker SIGKILL in aggregation",
            killed,
            lambda: processed_at_least(pool, job.id, 81),
        )
        adc.answer_more(None)
        assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc)


@pytest.mark.parametrize("run", RUNS)
async def test_kill_between_aggregation_and_finalize(
    run, pool, temporal_client, settings, nats_client, redis_client, tmp_path
):
    job, seeded, _ = await make_job(pool, images=pick(100, 1000))
    adc = RecordingAdc(nats_client, pool, job.id, seeded.pipeline_slug)
    with worker_processes(settings, tmp_path) as workers:
        async with AsyncExitStack() as stack:
            hold = await stack.enter_async_context(hold_finalize(settings, job.id))
            first = workers.start()
            await stack.enter_async_context(simulated_worker(adc))
            await JobActions(pool, temporal_client, settings).run(job.id)
            await hold.wait_blocked(within=120)  # every result saved, SUCCESS not written
            first.kill()
            killed = time.monotonic()
            await hold.terminate_waiters()  # the dead process's write never commits
            workers.start()
            await hold.release()
            assert await wait_final(pool, job.id) == JobState.SUCCESS
            record_recovery("worker SIGKILL before finalize", time.monotonic() - killed)
            await eventually(lambda: queue_gone(nats_client, redis_client, job.id))
    await check_exactly_once(pool, job.id, adc)


async def queue_gone(nats_client, redis_client, job_id: int) -> bool:
    """The run's cleanup, right after the final status: no stream, no keys."""
    try:
        await nats_client.jetstream().stream_info(NAMES.stream(job_id))
        return False
    except NotFoundError:
        return await redis_client.exists(*NAMES.redis_keys(job_id)) == 0
