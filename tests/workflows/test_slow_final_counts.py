"""A job whose final session/station counts take longer than the heartbeat timeout (a 100k-image
job on big tables) still ends: the aggregator heartbeats through them, so its attempt is not
timed out and retried into the same refresh for ever."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from antenna_db import counts
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers.jobs import make_job
from tests.helpers.settings import SHORT_HEARTBEATS, with_settings
from tests.helpers.temporal import (
    SimulatedAdcWorker,
    job_handle,
    running_workers,
    simulated_worker,
)


async def test_final_counts_longer_than_the_heartbeat_timeout(
    pool, temporal_client, settings, nats_client, monkeypatch
):
    # Counts only at the end (no refresh while it runs); heartbeat timeout 2 s.
    settings = with_settings(
        settings, jobs={**SHORT_HEARTBEATS, "counts_interval": timedelta(hours=1)}
    )
    slow = settings.jobs.heartbeat_timeout.total_seconds() * 2
    original = counts.refresh_job_counts
    calls: list[int] = []

    async def slow_refresh(conn: Any, job_id: int, project_id: int) -> None:
        calls.append(job_id)
        await asyncio.sleep(slow)
        await original(conn, job_id, project_id)

    monkeypatch.setattr(counts, "refresh_job_counts", slow_refresh)
    job, seeded, _ = await make_job(pool, images=20)
    async with running_workers(temporal_client, settings):
        worker = SimulatedAdcWorker(nats_client, pool, job.id, seeded.pipeline_slug)
        async with simulated_worker(worker):
            await JobActions(pool, temporal_client, settings).run(job.id)
            result = await asyncio.wait_for(job_handle(temporal_client, job.id).result(), 90)
    assert result.status == JobState.SUCCESS and result.processed == 20
    assert calls == [job.id]  # one attempt: not timed out and retried
