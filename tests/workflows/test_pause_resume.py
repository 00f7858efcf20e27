"""Pause and resume, end to end over the real API, the Temporal worker, Postgres, Redis and NATS:
a paused job hands out no tasks, still saves the results in flight, says so in its detail view,
progress and log, is not failed by the stall rule, and resumes where it stopped; cancel works on
a paused job. Exact counts throughout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from antenna_db.seed import seed
from core.settings import Settings
from core.states import JobState
from core.workflow_io import WorkflowProgress
from tests.helpers import eventually
from tests.helpers.api import answer_tasks, api_and_workers, start_over_api, take_tasks, tasks_now
from tests.helpers.db import get_job, image_statuses, job_logs, run_counters
from tests.helpers.temporal import job_handle

STALL = timedelta(seconds=4)


def _short_stall(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"jobs": settings.jobs.model_copy(update={"stall_period": STALL})}
    )


def _process_params(body: dict[str, Any]) -> dict[str, Any]:
    stage = next(s for s in body["progress"]["stages"] if s["key"] == "process")
    return {p["key"]: p["value"] for p in stage["params"]}


async def test_pause_saves_in_flight_withholds_tasks_and_resume_finishes(
    settings, pool, temporal_client
):
    settings = _short_stall(settings)
    async with pool.connection() as conn:
        seeded = await seed(conn, 40)
        control_seed = await seed(conn, 6)
    async with api_and_workers(settings, pool, temporal_client) as client:
        job_id = await start_over_api(client, seeded)
        first = await take_tasks(client, job_id, 20)

        paused = await client.post(f"/jobs/{job_id}/pause/", json={"reason": "GPU maintenance"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        assert paused.json()["status"] == JobState.STARTED
        assert await tasks_now(client, job_id) == []

        # Results already in flight are still saved while paused.
        await answer_tasks(client, job_id, first[:10])

        async def ten_saved() -> bool:
            return await run_counters(pool, job_id) == (10, 0)

        await eventually(ten_saved, within=30)
        assert await tasks_now(client, job_id) == []

        # The detail view, Antenna's progress JSON and the job log say so; the status stays
        # one of Antenna's.
        async def progress_shows_paused() -> bool:
            body = (await client.get(f"/jobs/{job_id}/")).json()
            return bool(body["paused"]) and _process_params(body).get("paused") == "yes"

        await eventually(progress_shows_paused, within=30)
        detail = (await client.get(f"/jobs/{job_id}/")).json()
        assert detail["status"] == "STARTED"
        assert detail["progress"]["summary"]["status"] == "STARTED"
        messages = [line["message"] for line in await job_logs(pool, job_id)]
        assert any(m.startswith("Paused: GPU maintenance") for m in messages)

        async def workflow_paused() -> bool:
            state = await job_handle(temporal_client, job_id).query(
                "progress", result_type=WorkflowProgress
            )
            return state.paused

        await eventually(workflow_paused, within=30)

        # Resume: the tasks not yet handed out come, and no task twice.
        resumed = await client.post(f"/jobs/{job_id}/resume/")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["paused"] is False
        rest = await take_tasks(client, job_id, 20)
        assert {t["image_id"] for t in rest}.isdisjoint({t["image_id"] for t in first})

        # Paused again with every task delivered and 30 unanswered: an unpaused job in the same
        # state is failed by the stall rule; the paused one is not.
        assert (await client.post(f"/jobs/{job_id}/pause/")).status_code == 200
        control_id = await start_over_api(client, control_seed)
        await take_tasks(client, control_id, 6)

        async def control_stalled() -> bool:
            return (await get_job(pool, control_id)).status == JobState.FAILURE

        await eventually(control_stalled, within=120)
        assert await run_counters(pool, control_id) == (0, 6)
        assert (await get_job(pool, job_id)).status == JobState.STARTED
        assert await run_counters(pool, job_id) == (10, 0)

        assert (await client.post(f"/jobs/{job_id}/resume/")).status_code == 200
        await answer_tasks(client, job_id, first[10:] + rest)

        async def finished() -> bool:
            return (await get_job(pool, job_id)).status in {JobState.SUCCESS, JobState.FAILURE}

        await eventually(finished, within=60)
        final = (await client.get(f"/jobs/{job_id}/")).json()

    assert final["status"] == "SUCCESS"
    assert final["paused"] is False
    params = _process_params(final)
    assert "paused" not in params
    assert params["processed"] == 40 and params["failed"] == 0 and params["remaining"] == 0
    results = next(s for s in final["progress"]["stages"] if s["key"] == "results")
    counts = {p["key"]: p["value"] for p in results["params"]}
    assert counts["detections"] == 40 and counts["classifications"] == 40
    statuses = await image_statuses(pool, job_id)
    assert len(statuses) == 40 and {s for s, _ in statuses.values()} == {"processed"}
    messages = [line["message"] for line in await job_logs(pool, job_id)]
    assert sum(m.startswith("Paused:") for m in messages) == 2
    assert sum(m.startswith("Resumed:") for m in messages) == 2
    assert not any(m.startswith("Stalled") for m in messages)


async def test_cancel_a_paused_job_and_pause_refusals(settings, pool, temporal_client):
    async with pool.connection() as conn:
        seeded = await seed(conn, 12)
    async with api_and_workers(settings, pool, temporal_client) as client:
        job_id = await start_over_api(client, seeded)
        tasks = await take_tasks(client, job_id, 4)
        assert (await client.post(f"/jobs/{job_id}/pause/")).status_code == 200
        # A second pause changes nothing and logs nothing.
        assert (await client.post(f"/jobs/{job_id}/pause/")).status_code == 200
        await answer_tasks(client, job_id, tasks[:2])

        async def two_saved() -> bool:
            return await run_counters(pool, job_id) == (2, 0)

        await eventually(two_saved, within=30)
        cancelled = await client.post(f"/jobs/{job_id}/cancel/")
        assert cancelled.status_code == 200, cancelled.text

        async def revoked() -> bool:
            return (await get_job(pool, job_id)).status == JobState.REVOKED

        await eventually(revoked, within=60)

        # The row is final first; the run closes once its last workflow task is done.
        async def run_cancelled() -> bool:
            desc = await job_handle(temporal_client, job_id).describe()
            return desc.status == WorkflowExecutionStatus.CANCELED

        await eventually(run_cancelled, within=30)
        refused = await client.post(f"/jobs/{job_id}/resume/")
        assert refused.status_code == 409, refused.text
        assert (await client.post(f"/jobs/{job_id}/pause/")).status_code == 409
        messages = [line["message"] for line in await job_logs(pool, job_id)]
        assert sum(m.startswith("Paused:") for m in messages) == 1
        assert (await client.post("/jobs/999999999999/pause/")).status_code == 404
