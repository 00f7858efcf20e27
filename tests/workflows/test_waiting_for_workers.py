"""A job whose pipeline no processing worker polls waits, says so, and is not failed by the stall
rule; when a worker comes, it runs to SUCCESS."""

from __future__ import annotations

import json
from datetime import timedelta

import nats

from activities.ml_run import WAITING_FOR_WORKERS, WORKERS_PARAM
from api.context import ApiResources
from cli.fakes.worker import FakeWorker, FakeWorkerConfig
from core.progress import JobProgress
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.api import http_client, running_app
from tests.helpers.db import create_token, get_job, image_statuses, job_logs
from tests.helpers.jobs import make_job
from tests.helpers.temporal import job_handle, running_workers

IMAGES = 12


async def raw_progress(pool, job_id: int) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT progress::text AS p FROM jobs_job WHERE id = %s", (job_id,)
        )
        row = await cur.fetchone()
        return json.loads(row["p"])


def antenna_shaped(progress: dict) -> None:
    """What Antenna's JobProgress parser needs: summary and stages with full params."""
    assert set(progress["summary"]) >= {"status", "progress"}
    assert progress["summary"]["status"] in JobState.__members__
    for stage in progress["stages"]:
        assert {"key", "name", "status", "progress", "params"} <= set(stage)
        assert stage["status"] in JobState.__members__
        for param in stage["params"]:
            assert set(param) >= {"name", "key", "category", "value"}
    JobProgress.model_validate(progress)


async def test_a_job_without_workers_waits_past_the_stall_period(pool, temporal_client, settings):
    # The job says it waits only once the window has passed since its tasks were queued.
    settings = settings.model_copy(
        update={
            "jobs": settings.jobs.model_copy(
                update={
                    "stall_period": timedelta(seconds=1),
                    "workers_seen_window": timedelta(seconds=1),
                }
            )
        }
    )
    job, seeded, _ = await make_job(pool, images=IMAGES)
    async with pool.connection() as conn:
        key = await create_token(conn, "waiting")
    async with running_workers(temporal_client, settings):
        await JobActions(pool, temporal_client, settings).run(job.id)

        async def deferred() -> bool:
            messages = [r["message"] for r in await job_logs(pool, job.id)]
            return any("while waiting for workers: tasks undelivered" in m for m in messages)

        # The stall rule looked at the job (its stall period passed) and left it alone.
        await eventually(deferred, within=60)
        logs = [r["message"] for r in await job_logs(pool, job.id)]
        assert any(m.startswith("Waiting for workers: no processing worker") for m in logs)
        assert (await get_job(pool, job.id)).status == JobState.STARTED
        assert all(
            status == "pending" for status, _ in (await image_statuses(pool, job.id)).values()
        )
        progress = await raw_progress(pool, job.id)
        antenna_shaped(progress)
        process = JobProgress.model_validate(progress).stage("process")
        assert process.param(WORKERS_PARAM) == WAITING_FOR_WORKERS
        assert process.param("failed") == 0

        # A worker comes: the job runs to the end with nothing failed.
        nc = await nats.connect(settings.nats.url)
        try:
            resources = ApiResources(pool=pool, nats=nc, temporal=temporal_client)
            async with running_app(settings, resources) as app, http_client(app, key) as client:
                fake = FakeWorker(
                    FakeWorkerConfig(
                        api_url="http://testserver",
                        token=key,
                        pipelines=[seeded.pipeline_slug],
                        poll_interval=0.2,
                    ),
                    transport=client._transport,
                )
                async with fake.running():
                    result = await job_handle(temporal_client, job.id).result()
        finally:
            await nc.drain()

    assert result.status == JobState.SUCCESS
    assert (result.processed, result.failed) == (IMAGES, 0)
    logs = [r["message"] for r in await job_logs(pool, job.id)]
    assert any(
        m == f"Workers are back for pipeline {seeded.pipeline_slug}: tasks are fetched again"
        for m in logs
    )
    assert not any(m.startswith("Stalled:") for m in logs)
    final = await raw_progress(pool, job.id)
    antenna_shaped(final)
    # Workers came: the param is gone, the process stage has Antenna's params only.
    params = JobProgress.model_validate(final).stage("process").params
    assert [p.key for p in params] == ["processed", "remaining", "failed"]
