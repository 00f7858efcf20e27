from antenna_db import job_store
from antenna_db.seed import seed
from core.job_requests import NewMlJob
from core.states import DispatchMode, JobState


async def test_seed_and_create_job(pool):
    async with pool.connection() as conn:
        seeded = await seed(conn, 25)
        job = await job_store.create_ml_job(
            conn,
            NewMlJob(
                project_id=seeded.project_id,
                pipeline_slug=seeded.pipeline_slug,
                collection_id=seeded.collection_id,
            ),
        )
        assert job.status == JobState.CREATED
        assert job.dispatch_mode == DispatchMode.ASYNC_API
        assert job.id > 10**8
        assert await job_store.transition(conn, job.id, JobState.STARTED, [JobState.CREATED])
        assert not await job_store.transition(conn, job.id, JobState.STARTED, [JobState.CREATED])
        assert (await job_store.get_job(conn, job.id)).progress.summary.status == JobState.STARTED


async def test_temporal_env_is_up(temporal_client):
    assert await temporal_client.service_client.check_health()
