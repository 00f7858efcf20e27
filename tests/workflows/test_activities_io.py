"""Activities against the real services, through ActivityEnvironment (no workflow)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from temporalio.testing import ActivityEnvironment

from activities.async_api.job_state_cache import JobStateCache
from activities.async_api.models import PublishInput
from activities.async_api.task_queue import TaskQueueActivities
from activities.images import ImageActivities
from activities.models import CollectInput, JobRef
from antenna_db import job_store
from antenna_db.capture_urls import NO_URL_ERROR
from antenna_db.seed import ensure_algorithms
from tests.helpers import eventually
from tests.helpers.db import NAMES, image_ids
from tests.helpers.jobs import make_job
from worker.resources import Resources


@pytest.fixture
async def resources(settings):
    res = await Resources.open(settings, run_migrations=False)
    try:
        yield res
    finally:
        await res.close()


async def collect(pool, settings, job_id: int):
    return await ActivityEnvironment().run(
        ImageActivities(pool, settings).collect_images, CollectInput(job_id=job_id)
    )


async def test_collect_skips_processed_images_and_applies_the_limit(pool, settings):
    job, _, _ = await make_job(pool, images=20, limit=5, shuffle=False)
    async with pool.connection() as conn:
        detector, _ = await ensure_algorithms(conn)
        cur = await conn.execute(
            "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
            " WHERE sourceimagecollection_id = %s"
            " ORDER BY source_image_id LIMIT 3",
            (job.collection_id,),
        )
        done = [r["source_image_id"] for r in await cur.fetchall()]
        # One null-bbox marker is enough for an image to count as processed by the pipeline.
        await conn.execute(
            "INSERT INTO main_detection (created_at, updated_at, source_image_id,"
            " detection_algorithm_id) SELECT now(), now(), unnest(%s::bigint[]), %s",
            (done, detector),
        )
    result = await collect(pool, settings, job.id)
    assert (result.total, result.candidates) == (5, 17)
    ids = await image_ids(pool, job.id)
    assert len(ids) == 5 and not set(ids) & set(done) and ids == sorted(ids)
    again = await collect(pool, settings, job.id)  # a retried attempt replaces, never appends
    assert again.total == 5 and await image_ids(pool, job.id) == ids
    async with pool.connection() as conn:
        record = await job_store.get_job(conn, job.id)
        await conn.execute(
            "UPDATE main_project SET feature_flags = feature_flags"
            " || '{\"reprocess_all_images\": true}' WHERE id = %s",
            (job.project_id,),
        )
    stage = record.progress.stage("collect")
    assert (stage.param("total_images"), stage.param("limit")) == (5, 5)
    assert (await collect(pool, settings, job.id)).candidates == 20


async def test_collect_shuffles(pool, settings):
    job, _, _ = await make_job(pool, images=200, shuffle=True)
    await collect(pool, settings, job.id)
    ids = await image_ids(pool, job.id)
    assert len(ids) == 200 and ids != sorted(ids)


async def test_cancelling_the_awaiting_task_cancels_the_server_side_query(pool):
    """What collect relies on: psycopg sends a cancel request when its awaiting task is
    cancelled, so a cancelled collect does not leave its statement running on the server."""
    marker = f"aj_cancel_probe_{time.monotonic_ns()}"

    async def slow() -> None:
        async with pool.connection() as conn:
            await conn.execute(f"SELECT pg_sleep(30) AS {marker}")

    async def running() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE %s AND query NOT LIKE '%%pg_stat%%'",
                (f"%{marker}%",),
            )
            row = await cur.fetchone()
            return row["n"]

    task = asyncio.create_task(slow())
    await eventually(running)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5
    assert await running() == 0


async def test_publish_resumes_from_its_checkpoint_and_fails_images_without_url(
    pool, settings, resources, redis_client
):
    job, _, _ = await make_job(pool, images=30, shuffle=False)
    await collect(pool, settings, job.id)
    ids = await image_ids(pool, job.id)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE main_sourceimage SET public_base_url = NULL WHERE id = %s", (ids[-1],)
        )
    queue = TaskQueueActivities(resources.nc, resources.js, resources.redis, pool, settings)
    env = ActivityEnvironment()
    await env.run(queue.reset_job_queue, JobRef(job_id=job.id))
    await env.run(queue.prepare_job_queue, JobRef(job_id=job.id))
    await env.run(queue.prepare_job_queue, JobRef(job_id=job.id))  # idempotent
    env.info = dataclasses.replace(
        env.info, heartbeat_details=[{"last_ordinal": 10, "published": 10, "no_url": 0}]
    )
    result = await env.run(queue.publish_tasks, PublishInput(job_id=job.id, total=30))
    assert (result.published, result.no_url) == (29, 1)
    info = await resources.js.stream_info(NAMES.stream(job.id))
    assert info.state.messages == 19  # ordinals 11..29 only; 1..10 were "published" before
    # A retry without a checkpoint republishes everything: JetStream drops the duplicates.
    env.info = dataclasses.replace(env.info, heartbeat_details=[])
    await env.run(queue.publish_tasks, PublishInput(job_id=job.id, total=30))
    info = await resources.js.stream_info(NAMES.stream(job.id))
    assert info.state.messages == 29
    pending = await redis_client.smembers(NAMES.pending_key(job.id, "process"))
    assert pending == {str(i) for i in ids[:-1]}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT image_id, payload->>'error' AS error FROM result_inbox"
            " WHERE job_id = %s",
            (job.id,),
        )
        assert [(r["image_id"], r["error"]) for r in await cur.fetchall()] == [
            (ids[-1], NO_URL_ERROR)
        ]
        await conn.execute("DELETE FROM result_inbox WHERE job_id = %s", (job.id,))
    await env.run(queue.cleanup_job_queue, JobRef(job_id=job.id))
    await env.run(queue.cleanup_job_queue, JobRef(job_id=job.id))  # already gone is fine
    assert await redis_client.exists(*NAMES.redis_keys(job.id)) == 0


async def test_redis_state_is_rebuilt_from_postgres(pool, settings, redis_client):
    job, _, _ = await make_job(pool, images=12, shuffle=False)
    await collect(pool, settings, job.id)
    ids = await image_ids(pool, job.id)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE job_images SET status = 'failed' WHERE job_id = %s AND source_image_id = %s",
            (job.id, ids[0]),
        )
        await conn.execute(
            "UPDATE job_images SET status = 'processed' WHERE job_id = %s AND source_image_id = %s",
            (job.id, ids[1]),
        )
        cache = JobStateCache(redis_client, 60, NAMES)
        assert not await cache.exists(job.id)
        await cache.rebuild(conn, job.id, page_size=5)
    assert await cache.exists(job.id)
    assert await redis_client.get(NAMES.total_key(job.id)) == "12"
    for stage in ("process", "results"):
        members = await redis_client.smembers(NAMES.pending_key(job.id, stage))
        assert members == {str(i) for i in ids[2:]}
    assert await redis_client.smembers(NAMES.failed_key(job.id)) == {str(ids[0])}
    await cache.delete(job.id)
