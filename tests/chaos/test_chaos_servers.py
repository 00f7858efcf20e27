"""Servers failing under a running job: Temporal restarted on its database file, NATS restarted
on its file store, Redis flushed, the worker's PostgreSQL connections terminated. The servers
that are restarted or flushed are the test's own (free ports, tmp dirs); the worker runs as a
subprocess. Each job must end SUCCESS with every image processed exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

import nats
import pytest
import redis.asyncio as aioredis

from core.states import JobState
from core.temporal_client import connect_temporal
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.chaos import (
    RecordingAdc,
    check_exactly_once,
    hold_no_url_failure,
    pick,
    processed_at_least,
    record_recovery,
    record_recovery_when,
    wait_final,
)
from tests.helpers.db import NAMES, job_counts
from tests.helpers.jobs import make_job
from tests.helpers.processes import OwnedNats, OwnedRedis, OwnedTemporal, owned, worker_processes
from tests.helpers.settings import with_crashes, with_settings
from tests.helpers.temporal import job_handle, simulated_worker

pytestmark = pytest.mark.chaos
RUNS = range(pick(1, 3))
IMAGES = pick(300, 3000)
FIRST = IMAGES // 3


@pytest.fixture
def settings(settings):
    # Acks lost in an outage come back soon.
    return with_crashes(settings, nats={"ack_wait": timedelta(seconds=3)})


@pytest.mark.parametrize("run", RUNS)
async def test_temporal_restart_mid_job(run, pool, settings, tmp_path, under_way):
    async with owned(OwnedTemporal("temporal", tmp_path / "temporal")) as server:
        settings = with_settings(settings, temporal={"address": server.address})
        client = await connect_temporal(settings.temporal)
        async with under_way(IMAGES, FIRST, client=client, settings=settings) as on:
            job, adc = on.job, on.adc
            server.stop()
            # Results keep being saved while Temporal is down: only orchestration waits.
            adc.answer_more(FIRST)
            await eventually(lambda: processed_at_least(pool, job.id, 2 * FIRST), within=60)
            await asyncio.sleep(settings.jobs.heartbeat_timeout.total_seconds())
            await server.start()
            restarted = time.monotonic()
            adc.answer_more(None)
            assert await wait_final(pool, job.id) == JobState.SUCCESS
            record_recovery("Temporal restart (restart to SUCCESS)", time.monotonic() - restarted)
            # The row is final before the run closes (cleanup comes after finalize): wait
            # for the close while the workers still run.
            handle = client.get_workflow_handle(NAMES.workflow_id(job.id))

            async def closed() -> str | None:
                status = (await handle.describe()).status
                return None if status is None or status.name == "RUNNING" else status.name

            assert await eventually(closed, within=60) == "COMPLETED"
        await check_exactly_once(pool, job.id, adc)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("phase", ["publish", "aggregation"])
async def test_nats_restart_mid_job(run, phase, pool, settings, temporal_client, tmp_path):
    """In publish: the page in flight loses its acks, is published again from the checkpoint and
    deduplicated by Nats-Msg-Id (the window survives the restart in the file store). In
    aggregation: acks lost in the outage make NATS redeliver; replayed results count once."""
    settings = with_settings(settings, jobs={"publish_page_size": 50})
    async with owned(OwnedNats("nats", tmp_path / "nats")) as server:
        settings = with_settings(settings, nats={"url": server.url})
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            job, seeded, _ = await make_job(pool, images=IMAGES, shuffle=False)
            no_url = await _drop_url(pool, seeded.collection_id, 125)
            adc = RecordingAdc(nc, pool, job.id, seeded.pipeline_slug, budget=FIRST)
            with worker_processes(settings, tmp_path) as workers:
                workers.start()
                async with AsyncExitStack() as stack:
                    await stack.enter_async_context(simulated_worker(adc))
                    if phase == "publish":
                        hold = await stack.enter_async_context(
                            hold_no_url_failure(settings, job.id, no_url)
                        )
                    await JobActions(pool, temporal_client, settings).run(job.id)
                    if phase == "publish":
                        await hold.wait_blocked()  # pages 1-2 out, page 3 read and held
                    else:
                        await eventually(lambda: processed_at_least(pool, job.id, FIRST), within=60)
                        adc.answer_more(FIRST)  # answered around the outage
                    await server.restart()
                    restarted = time.monotonic()
                    if phase == "publish":
                        await hold.release()
                    adc.answer_more(None)
                    assert await wait_final(pool, job.id) == JobState.SUCCESS
                    record_recovery(
                        f"NATS restart in {phase} (restart to SUCCESS)",
                        time.monotonic() - restarted,
                    )
            await check_exactly_once(pool, job.id, adc, failed={no_url})
        finally:
            await nc.close()


async def _drop_url(pool, collection_id: int, offset: int) -> int:
    """The image at ``offset`` (in id order) loses its URL: publish stores its failure."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s"
            " ORDER BY source_image_id OFFSET %s LIMIT 1",
            (collection_id, offset),
        )
        image = (await cur.fetchone())["source_image_id"]
        await conn.execute(
            "UPDATE main_sourceimage SET public_base_url = NULL WHERE id = %s", (image,)
        )
    return image


@pytest.mark.parametrize("run", RUNS)
async def test_redis_flushed_mid_job(run, pool, settings, temporal_client, tmp_path, under_way):
    async with owned(OwnedRedis("redis", tmp_path / "redis")) as server:
        settings = with_settings(settings, redis={"url": server.url})
        redis = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            async with under_way(IMAGES, FIRST, settings=settings) as on:
                job, adc = on.job, on.adc
                await redis.flushall()
                flushed = time.monotonic()

                async def rebuilt():
                    pending = await redis.scard(NAMES.pending_key(job.id, "process"))
                    total = await redis.get(NAMES.total_key(job.id))
                    counts = await job_counts(pool, job.id)
                    return total == str(IMAGES) and pending == counts["pending"]

                await record_recovery_when(
                    "Redis flushed (flush to keys rebuilt)", flushed, rebuilt
                )
                adc.answer_more(None)
                assert await wait_final(pool, job.id) == JobState.SUCCESS
                # The row is final before the run's clean-up (Redis keys) has run.
                await job_handle(temporal_client, job.id).result()
            await check_exactly_once(pool, job.id, adc)
            assert await redis.exists(*NAMES.redis_keys(job.id)) == 0
        finally:
            await redis.aclose()


@pytest.mark.parametrize("run", RUNS)
async def test_postgres_connections_dropped_during_aggregation(run, pool, under_way):
    app_name = f"aj-chaos-{uuid.uuid4().hex[:8]}"
    async with under_way(IMAGES, FIRST, batch_size=20, PGAPPNAME=app_name) as on:
        job, adc = on.job, on.adc
        adc.answer_more(FIRST)  # posted while the connections keep dying
        terminated = 0
        # Each round drops every connection of the worker at once (a failover, a restart of
        # a pooler), replacements included.
        for _ in range(pick(6, 12)):
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (app_name,),
                )
                terminated += (await cur.fetchone())["n"]
            await asyncio.sleep(0.3)
        last = time.monotonic()
        assert terminated > 0
        await record_recovery_when(
            "PostgreSQL connections terminated (last kill to results saved)",
            last,
            lambda: processed_at_least(pool, job.id, 2 * FIRST),
        )
        adc.answer_more(None)
        assert await wait_final(pool, job.id) == JobState.SUCCESS
    await check_exactly_once(pool, job.id, adc)
