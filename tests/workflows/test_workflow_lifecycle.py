"""Where a run starts from: a final job, a job cancelled before its run, a retried job."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from antenna_db import job_store
from core import naming, search_attributes
from core.states import JobState
from core.workflow_io import JobWorkflowInput
from job_control.actions import JobActions
from tests.helpers.db import NAMES
from tests.helpers.jobs import assert_queue_gone, make_job
from tests.helpers.temporal import SimulatedAdcWorker, job_handle, running_workers, simulated_worker


async def start(client, settings, job_id: int):
    return await client.start_workflow(
        naming.JOB_WORKFLOW,
        JobWorkflowInput(job_id=job_id),
        id=NAMES.workflow_id(job_id),
        task_queue=settings.jobs.task_queue,
    )


async def log_count(pool, job_id: int) -> int:
    async with pool.connection() as conn:
        return len(await job_store.latest_logs(conn, job_id, 1000))


async def test_a_final_job_ends_the_run_without_side_effects(pool, temporal_client, settings):
    job, _, _ = await make_job(pool, images=5)
    async with pool.connection() as conn:
        await job_store.transition(conn, job.id, JobState.SUCCESS, [JobState.CREATED])
    before = await log_count(pool, job.id)
    async with running_workers(temporal_client, settings):
        await start(temporal_client, settings, job.id)
        result = await job_handle(temporal_client, job.id).result()
    assert result.status == JobState.SUCCESS and result.total == 0
    assert await log_count(pool, job.id) == before
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_images WHERE job_id = %s", (job.id,)
        )
        assert (await cur.fetchone())["n"] == 0


async def test_a_job_cancelled_before_its_run_is_revoked(
    pool, temporal_client, settings, redis_client
):
    job, _, _ = await make_job(pool, images=5)
    async with pool.connection() as conn:
        await job_store.transition(conn, job.id, JobState.CANCELING, [JobState.CREATED])
    async with running_workers(temporal_client, settings) as resources:
        handle = await start(temporal_client, settings, job.id)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        await assert_queue_gone(resources, redis_client, job.id)
    async with pool.connection() as conn:
        assert await job_store.get_status(conn, job.id) == JobState.REVOKED


async def test_a_retried_job_starts_clean_and_succeeds(
    pool, temporal_client, settings, nats_client
):
    job, seeded, _ = await make_job(pool, images=40)
    actions = JobActions(pool, temporal_client, settings)
    async with running_workers(temporal_client, settings):
        await actions.run(job.id)
        handle = job_handle(temporal_client, job.id)
        await actions.cancel(job.id, "first run cancelled")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        async with pool.connection() as conn:
            assert await job_store.get_status(conn, job.id) == JobState.REVOKED
        worker = SimulatedAdcWorker(nats_client, pool, job.id, seeded.pipeline_slug)
        async with simulated_worker(worker):
            await actions.retry(job.id)
            result = await job_handle(temporal_client, job.id).result()
        desc = await job_handle(temporal_client, job.id).describe()
    assert result.status == JobState.SUCCESS and result.processed == 40
    assert worker.acked == 40  # one message per image: nothing left over from the first run
    assert desc.typed_search_attributes.get(search_attributes.JOB_STATUS) == "SUCCESS"
    assert desc.typed_search_attributes.get(search_attributes.JOB_ID) == job.id
