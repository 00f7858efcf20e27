"""The job workflow end to end: real Temporal dev server, Postgres, Redis and NATS, with a
simulated ADC worker answering tasks through the result inbox."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import NotFoundError
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Replayer

from antenna_db import job_store
from core.states import JobState
from core.workflow_io import WorkflowProgress
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.db import NAMES, fetch_one, image_ids
from tests.helpers.jobs import assert_queue_gone, detections_for, make_job
from tests.helpers.temporal import (
    TEMPORAL_CLI,
    SimulatedAdcWorker,
    job_handle,
    running_workers,
    simulated_worker,
    wait_activity,
)
from workflows.job_workflow import JobWorkflow


async def test_job_runs_to_success(pool, temporal_client, settings, nats_client, redis_client):
    job, seeded, _ = await make_job(pool, images=300)
    fails = lambda image: image % 10 == 0  # noqa: E731
    async with running_workers(temporal_client, settings) as resources:
        worker = SimulatedAdcWorker(
            nats_client, pool, job.id, seeded.pipeline_slug, fails=fails, batch_size=40
        )
        actions = JobActions(pool, temporal_client, settings)
        async with simulated_worker(worker):
            await actions.run(job.id)
            handle = job_handle(temporal_client, job.id)
            result = await handle.result()
        await assert_queue_gone(resources, redis_client, job.id)
        query = await handle.query("progress", result_type=WorkflowProgress)
        assert query.phase == "done" and query.published == 300

    ids = await image_ids(pool, job.id)
    assert len(ids) == 300
    failed = [i for i in ids if fails(i)]
    ok = [i for i in ids if not fails(i)]
    want_detections = sum(detections_for(i) for i in ok)
    markers = sum(1 for i in ok if detections_for(i) == 0)
    assert result.status == JobState.SUCCESS
    assert (result.total, result.processed, result.failed) == (300, len(ok), len(failed))

    row = await fetch_one(
        pool,
        "SELECT count(*) FILTER (WHERE bbox_x1 IS NOT NULL) AS real,"
        " count(*) FILTER (WHERE bbox_x1 IS NULL) AS markers FROM job_detections WHERE job_id = %s",
        job.id,
    )
    assert (row["real"], row["markers"]) == (want_detections, markers)
    row = await fetch_one(
        pool,
        "SELECT count(*) AS n FROM job_classifications c WHERE c.job_id = %s",
        job.id,
    )
    assert row["n"] == want_detections
    row = await fetch_one(
        pool,
        "SELECT count(*) FILTER (WHERE status = 'processed') AS processed,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " count(*) FILTER (WHERE status = 'pending') AS pending FROM job_images WHERE job_id = %s",
        job.id,
    )
    assert (row["processed"], row["failed"], row["pending"]) == (len(ok), len(failed), 0)
    assert await fetch_one(pool, "SELECT 1 FROM result_inbox WHERE job_id = %s", job.id) is None

    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 100)]
    assert done.status == JobState.SUCCESS and done.finished_at and done.started_at
    progress = done.progress
    assert progress.summary.status == JobState.SUCCESS
    assert progress.summary.progress == 1.0
    assert progress.stage("collect").param("total_images") == 300
    process, results = progress.stage("process"), progress.stage("results")
    assert (process.param("processed"), process.param("remaining"), process.param("failed")) == (
        300,
        0,
        len(failed),
    )
    assert results.param("captures") == len(ok)
    assert results.param("detections") == want_detections
    assert results.param("classifications") == want_detections
    assert all(s.status == JobState.SUCCESS and s.progress == 1.0 for s in progress.stages)
    assert any(m.startswith("Collected 300 images") for m in logs)
    assert any(m.startswith("Published 300 tasks") for m in logs)
    assert any(m.startswith("Job finished: SUCCESS") for m in logs)
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED


async def test_duplicate_results_save_and_count_once(pool, temporal_client, settings, nats_client):
    job, seeded, _ = await make_job(pool, images=60)
    async with running_workers(temporal_client, settings):
        worker = SimulatedAdcWorker(
            nats_client, pool, job.id, seeded.pipeline_slug, duplicates=True
        )
        async with simulated_worker(worker):
            await JobActions(pool, temporal_client, settings).run(job.id)
            result = await job_handle(temporal_client, job.id).result()
    ids = await image_ids(pool, job.id)
    assert result.status == JobState.SUCCESS and result.processed == 60
    row = await fetch_one(
        pool,
        "SELECT count(*) FILTER (WHERE bbox_x1 IS NOT NULL) AS real, count(*) AS all"
        " FROM job_detections WHERE job_id = %s",
        job.id,
    )
    want = sum(detections_for(i) for i in ids)
    assert row["real"] == want
    assert row["all"] == want + sum(1 for i in ids if detections_for(i) == 0)
    async with pool.connection() as conn:
        progress = (await job_store.get_job(conn, job.id)).progress
    assert progress.stage("results").param("detections") == want
    assert progress.stage("process").param("processed") == 60


async def test_mostly_failed_job_ends_failure(pool, temporal_client, settings, nats_client):
    job, seeded, _ = await make_job(pool, images=40)
    async with running_workers(temporal_client, settings):
        worker = SimulatedAdcWorker(
            nats_client, pool, job.id, seeded.pipeline_slug, fails=lambda i: i % 5 != 0
        )
        async with simulated_worker(worker):
            await JobActions(pool, temporal_client, settings).run(job.id)
            handle = job_handle(temporal_client, job.id)
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()
    assert isinstance(raised.value.cause, ApplicationError)
    assert raised.value.cause.type == "JobFailed"
    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
    assert done.status == JobState.FAILURE and done.finished_at
    assert done.progress.stage("process").status == JobState.FAILURE
    assert done.progress.stage("process").param("failed") == sum(
        1 for i in await image_ids(pool, job.id) if i % 5 != 0
    )


async def test_zero_image_job_succeeds_at_once(
    pool, temporal_client, settings, redis_client, job_workers
):
    job, _, _ = await make_job(pool, images=0)
    await JobActions(pool, temporal_client, settings).run(job.id)
    result = await job_handle(temporal_client, job.id).result()
    await assert_queue_gone(job_workers, redis_client, job.id)
    assert result.status == JobState.SUCCESS and result.total == 0
    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
    assert done.status == JobState.SUCCESS
    for key in ("process", "results"):
        assert done.progress.stage(key).status == JobState.SUCCESS
        assert done.progress.stage(key).progress == 1.0
    assert done.progress.summary.progress == 1.0


@pytest.mark.parametrize("how", ["handle", "signal", "cli_signal", "job_row"])
async def test_cancel_while_aggregating(
    how, pool, temporal_client, settings, nats_client, redis_client
):
    job, _, _ = await make_job(pool, images=120)
    async with running_workers(temporal_client, settings) as resources:
        await JobActions(pool, temporal_client, settings).run(job.id)
        handle = job_handle(temporal_client, job.id)
        await wait_activity(handle, "aggregate_results")
        if how == "handle":
            await handle.cancel(reason="test cancel")
        elif how == "signal":
            await handle.signal("cancel", "test signal")
        elif how == "cli_signal":  # `temporal workflow signal --name cancel`, no input
            proc = await asyncio.create_subprocess_exec(
                str(TEMPORAL_CLI), "workflow", "signal", "--address", settings.temporal.address,
                "-w", NAMES.workflow_id(job.id), "--name", "cancel",
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert await proc.wait() == 0
        else:  # cancelled in the database only, e.g. by the Antenna UI
            async with pool.connection() as conn:
                await job_store.transition(conn, job.id, JobState.CANCELING, [JobState.STARTED])
        with pytest.raises(WorkflowFailureError) as raised:
            await handle.result()
        assert isinstance(raised.value.cause, CancelledError)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        await assert_queue_gone(resources, redis_client, job.id)
        replayer = Replayer(workflows=[JobWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())
    async with pool.connection() as conn:
        done = await job_store.get_job(conn, job.id)
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 50)]
    assert done.status == JobState.REVOKED and done.finished_at is not None
    assert any(m.startswith("Job revoked") for m in logs)


async def test_starting_twice_keeps_one_run(pool, temporal_client, settings, nats_client):
    job, _, _ = await make_job(pool, images=80)
    async with running_workers(temporal_client, settings) as resources:
        actions = JobActions(pool, temporal_client, settings)
        await actions.run(job.id)
        first = await job_handle(temporal_client, job.id).describe()
        await actions.run(job.id)
        second = await job_handle(temporal_client, job.id).describe()
        assert first.run_id == second.run_id

        async def all_published():
            try:
                info = await resources.js.stream_info(NAMES.stream(job.id))
            except NotFoundError:
                return False
            return info.state.messages == 80

        await eventually(all_published)
        handle = job_handle(temporal_client, job.id)
        await actions.run(job.id)
        info = await resources.js.stream_info(NAMES.stream(job.id))
        assert info.state.messages == 80
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
