"""Images whose results never come are counted failed: by the MAX_DELIVERIES advisory, by the
stall period, and error results that name no image are traced back through their reply subject."""

from __future__ import annotations

from datetime import timedelta

from antenna_db import job_store
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers.jobs import make_job
from tests.helpers.settings import with_settings
from tests.helpers.temporal import SimulatedAdcWorker, job_handle, running_workers, simulated_worker


async def failed_images(pool, job_id: int) -> dict[int, str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT source_image_id, error FROM job_images WHERE job_id = %s AND status = 'failed'",
            (job_id,),
        )
        return {r["source_image_id"]: r["error"] for r in await cur.fetchall()}


async def run_with(pool, client, settings, nats_client, images: int, **worker_kwargs):
    job, seeded, _ = await make_job(pool, images=images)
    async with running_workers(client, settings):
        worker = SimulatedAdcWorker(
            nats_client, pool, job.id, seeded.pipeline_slug, batch_size=10, **worker_kwargs
        )
        async with simulated_worker(worker):
            await JobActions(pool, client, settings).run(job.id)
            result = await job_handle(client, job.id).result()
    async with pool.connection() as conn:
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 50)]
    return job, result, logs


async def test_tasks_that_exhaust_max_deliver_are_counted_failed(
    pool, temporal_client, settings, nats_client
):
    settings = with_settings(settings, nats={"ack_wait": timedelta(seconds=1), "max_deliver": 2})
    ignored = lambda image: image % 10 == 0  # noqa: E731
    job, result, logs = await run_with(
        pool, temporal_client, settings, nats_client, 30, ignores=ignored
    )
    failed = await failed_images(pool, job.id)
    assert result.status == JobState.SUCCESS
    assert failed and all(ignored(i) for i in failed)
    assert result.failed == len(failed) == 3
    assert all("delivered 2 times" in e for e in failed.values())
    assert any("exhausted max_deliver" in m for m in logs)


async def test_stalled_images_are_counted_failed(pool, temporal_client, settings, nats_client):
    settings = with_settings(settings, jobs={"stall_period": timedelta(seconds=1.5)})
    ignored = lambda image: image % 7 == 0  # noqa: E731
    job, result, logs = await run_with(
        pool, temporal_client, settings, nats_client, 28, ignores=ignored
    )
    failed = await failed_images(pool, job.id)
    assert result.status == JobState.SUCCESS
    assert failed and all(ignored(i) for i in failed) and result.failed == len(failed)
    assert all(e.startswith("no result for") for e in failed.values())
    assert any(m.startswith(f"Stalled: {len(failed)} images counted failed") for m in logs)


async def test_error_results_without_image_id_are_traced(
    pool, temporal_client, settings, nats_client
):
    fails = lambda image: image % 4 == 0  # noqa: E731
    job, result, _ = await run_with(
        pool, temporal_client, settings, nats_client, 24, fails=fails, anonymous_errors=True
    )
    failed = await failed_images(pool, job.id)
    assert result.status == JobState.SUCCESS
    assert len(failed) == result.failed == 6 and all(fails(i) for i in failed)
    assert set(failed.values()) == {"simulated"}
