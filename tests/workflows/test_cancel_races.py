"""The two races a cancel could lose, forced to happen at the worst moment.

1. ``POST /result/`` reads the job's status, a cancel commits, then the API stores the result:
   the insert re-checks the status in the same statement, so nothing is stored (``discarded``).
2. The aggregator checked the job a moment ago, a cancel commits, then it saves a batch: the
   batch's transaction reads the status FOR SHARE, so it saves nothing and stops.

The cancel is an uncommitted UPDATE held by the test while the other side runs into it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.async_api.models import AggregateInput
from activities.async_api.results import ResultActivities
from activities.images import ImageActivities
from activities.models import CollectInput
from core.states import JobState
from storage import inbox
from storage.pool import connect_kwargs
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.db import inbox_rows, job_status
from tests.helpers.jobs import entry, inbox_entries, made_run_id, make_job, success_result
from worker.resources import Resources


class UncommittedCancel:
    """``UPDATE jobs_job SET status = 'CANCELING'`` in an open transaction: the row stays locked."""

    def __init__(self, settings: Any, job_id: int) -> None:
        self._db = settings.database
        self.job_id = job_id

    async def __aenter__(self) -> UncommittedCancel:
        self.conn = await psycopg.AsyncConnection.connect(
            self._db.url, **{**connect_kwargs(self._db), "autocommit": False}
        )
        await self.conn.execute(
            "UPDATE jobs_job SET status = 'CANCELING' WHERE id = %s", (self.job_id,)
        )
        return self

    async def blocked(self) -> bool:
        """Someone waits for this transaction's row lock."""
        cur = await self.conn.execute(
            "SELECT count(*) AS n FROM pg_locks l JOIN pg_locks mine"
            " ON mine.transactionid = l.transactionid AND mine.pid = pg_backend_pid()"
            " WHERE l.locktype = 'transactionid' AND NOT l.granted"
        )
        return (await cur.fetchone())["n"] > 0

    async def commit(self) -> None:
        await self.conn.commit()

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()


async def test_a_cancel_between_status_check_and_insert_stores_nothing(
    api: Api, pool, streams, settings
):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 2})
    tasks = response.json()["tasks"]
    assert len(tasks) == 2
    async with UncommittedCancel(settings, job.id) as cancel:
        post = asyncio.create_task(
            api.client.post(
                f"/jobs/{job.id}/result/",
                json={"results": [entry(t, success_result(t)) for t in tasks]},
            )
        )
        # The API saw STARTED (the cancel is not committed) and now waits in its insert.
        await eventually(cancel.blocked, within=10)
        await cancel.commit()
        response = await post
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "discarded"
    assert await inbox_rows(pool, job.id) == []
    assert await job_status(pool, job.id) == JobState.CANCELING
    # Acked all the same, so the tasks do not come back.
    consumer = await streams.consumer(job.id)
    assert consumer.num_ack_pending == 0


async def test_an_aggregator_saves_nothing_once_the_job_is_canceling(pool, settings, nats_client):
    job = await make_job(pool, images=6, status=JobState.STARTED)
    resources = await Resources.open(settings, run_migrations=False)
    try:
        await ActivityEnvironment().run(
            ImageActivities(resources.pool, settings).collect_images,
            CollectInput(job_id=job.id),
        )
        async with pool.connection() as conn:
            await inbox.store(conn, job.id, inbox_entries(job))
        results = ResultActivities(
            resources.pool, resources.nc, resources.js, resources.redis, settings
        )
        # The activity works for the run make_job gave the job.
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_run_id=made_run_id(job.id))
        async with UncommittedCancel(settings, job.id) as cancel:
            run = asyncio.create_task(
                env.run(results.aggregate_results, AggregateInput(job_id=job.id, total=6))
            )
            await eventually(cancel.blocked, within=10)
            await cancel.commit()
            with pytest.raises(ApplicationError) as raised:
                await run
        assert raised.value.type == "JobCancelled"
    finally:
        await resources.close()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_detections WHERE job_id = %s", (job.id,)
        )
        assert (await cur.fetchone())["n"] == 0
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_images WHERE job_id = %s AND status = 'pending'",
            (job.id,),
        )
        assert (await cur.fetchone())["n"] == 6
    assert len(await inbox_rows(pool, job.id)) == 6
