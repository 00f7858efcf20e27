"""A whole ASYNC_API job through every real part: the HTTP API (job create + the ADC endpoints),
the Temporal worker, the fake ADC worker over HTTP, Postgres, Redis, NATS and a dev server."""

from __future__ import annotations

import nats
from nats.js.errors import NotFoundError

from antenna_db import job_store
from antenna_db.seed import seed
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.states import JobState
from tests.helpers import eventually
from tests.helpers.api import app_with_workers, start_over_api
from tests.helpers.db import NAMES, create_token

IMAGES = 300


async def _count(pool, sql: str, *args) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
        return int(next(iter(row.values())))


async def test_job_from_api_start_to_success(settings, pool, temporal_client, redis_client):
    async with pool.connection() as conn:
        seeded = await seed(conn, IMAGES)
        key = await create_token(conn, "e2e")
    async with app_with_workers(settings, pool, temporal_client, key) as client:
        job_id = await start_over_api(client, seeded)

        fake = FakeWorker(
            FakeWorkerConfig(
                api_url="http://testserver",
                token=key,
                error_rate=0.1,
                concurrency=3,
                pipelines=[seeded.pipeline_slug],
                poll_interval=0.2,
                seed=7,
            ),
            transport=client._transport,
        )
        async with fake.running():

            async def final() -> JobState | None:
                async with pool.connection() as conn:
                    status = await job_store.get_status(conn, job_id)
                return status if status in {JobState.SUCCESS, JobState.FAILURE} else None

            status = await eventually(final, within=120)
        detail = await client.get(f"/jobs/{job_id}")

    assert status == JobState.SUCCESS
    posted = fake.jobs[job_id]
    assert posted.images == IMAGES
    assert 0 < posted.errors < IMAGES * 0.5
    # Exact rows: every image once, detections and classifications as posted, nothing twice.
    assert await _count(pool, "SELECT count(*) FROM job_images WHERE job_id = %s", job_id) == IMAGES
    assert (
        await _count(
            pool,
            "SELECT count(*) FROM job_images WHERE job_id = %s AND status = 'processed'",
            job_id,
        )
        == IMAGES - posted.errors
    )
    assert (
        await _count(
            pool, "SELECT count(*) FROM job_images WHERE job_id = %s AND status = 'failed'", job_id
        )
        == posted.errors
    )
    assert (
        await _count(
            pool,
            "SELECT count(*) FROM job_detections WHERE job_id = %s AND bbox_x1 IS NOT NULL",
            job_id,
        )
        == posted.detections
    )
    assert (
        await _count(
            pool,
            "SELECT count(*) FROM job_classifications c WHERE c.job_id = %s",
            job_id,
        )
        == posted.classifications
    )
    assert await _count(pool, "SELECT count(*) FROM result_inbox WHERE job_id = %s", job_id) == 0

    # Final progress counters, as Antenna shows them.
    body = detail.json()
    stages = {s["key"]: s for s in body["progress"]["stages"]}
    params = {k: {p["key"]: p["value"] for p in s["params"]} for k, s in stages.items()}
    assert params["collect"]["total_images"] == IMAGES
    assert params["process"]["processed"] == IMAGES
    assert params["process"]["remaining"] == 0
    assert params["process"]["failed"] == posted.errors
    assert params["results"]["detections"] == posted.detections
    assert params["results"]["classifications"] == posted.classifications
    assert all(s["status"] == "SUCCESS" and s["progress"] == 1.0 for s in stages.values())
    assert body["progress"]["summary"] == {"status": "SUCCESS", "progress": 1.0}

    # Nothing left behind in NATS or Redis.
    nc = await nats.connect(settings.nats.url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(NAMES.stream(job_id))
            raise AssertionError("the job's stream still exists")
        except NotFoundError:
            pass
    finally:
        await nc.drain()
    assert await redis_client.exists(*NAMES.redis_keys(job_id)) == 0
