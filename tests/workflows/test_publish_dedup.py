"""Publishing is idempotent: an attempt that starts over (its checkpoint lost) or from a stale
checkpoint publishes nothing twice, because every task carries Nats-Msg-Id = the image id and
the stream's duplicate window covers a retry."""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.testing import ActivityEnvironment

from activities.async_api.models import PublishCheckpoint, PublishInput
from activities.async_api.task_queue import TaskQueueActivities
from activities.images import ImageActivities
from activities.models import CollectInput, JobRef
from core.states import JobState
from tests.helpers.db import NAMES
from tests.helpers.jobs import make_job
from tests.helpers.settings import with_settings
from worker.resources import Resources


@pytest.mark.parametrize("resume_from", [None, 0, 40])
async def test_a_repeated_publish_adds_no_message(resume_from, pool, settings, redis_client):
    settings = with_settings(settings, jobs={"publish_page_size": 25})
    job = await make_job(pool, images=100, status=JobState.STARTED)
    resources = await Resources.open(settings, run_migrations=False)
    queue = TaskQueueActivities(
        resources.nc, resources.js, resources.redis, resources.pool, settings
    )
    try:
        ref = JobRef(job_id=job.id)
        await ActivityEnvironment().run(
            ImageActivities(resources.pool, settings).collect_images,
            CollectInput(job_id=job.id),
        )
        await ActivityEnvironment().run(queue.prepare_job_queue, ref)
        first = await ActivityEnvironment().run(
            queue.publish_tasks, PublishInput(job_id=job.id, total=100)
        )
        assert first.published == 100
        # The retried attempt: no checkpoint (lost with the worker), or one behind the truth.
        env = ActivityEnvironment()
        if resume_from is not None:
            details = PublishCheckpoint(last_ordinal=resume_from, published=resume_from)
            env.info = dataclasses.replace(
                env.info, attempt=2, heartbeat_details=[details.model_dump(mode="json")]
            )
        again = await env.run(queue.publish_tasks, PublishInput(job_id=job.id, total=100))
        assert again.published == 100  # it counts what it sent, resumed or not
        info = await resources.js.stream_info(NAMES.stream(job.id))
        assert info.state.messages == 100 and info.state.last_seq == 100
        assert await redis_client.scard(NAMES.pending_key(job.id, "process")) == 100
    finally:
        await queue.remove(job.id)
        await resources.close()
