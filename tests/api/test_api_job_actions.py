"""Job actions over HTTP: create, run, cancel, retry, detail, and their 4xx answers.

No worker polls these tests' task queues: a started workflow stays Running, which is enough to
see what the API writes and asks of Temporal.
"""

from __future__ import annotations

import contextlib

from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from antenna_db import job_store
from antenna_db.seed import seed
from core.states import JobState
from tests.helpers.api import Api
from tests.helpers.db import NAMES, job_status
from tests.helpers.jobs import make_job


async def _seeded(pool, images: int = 3):
    async with pool.connection() as conn:
        return await seed(conn, images)


async def _terminate(temporal_client, job_id: int) -> None:
    with contextlib.suppress(RPCError):
        await temporal_client.get_workflow_handle(NAMES.workflow_id(job_id)).terminate("test end")


async def test_create_returns_the_job(api: Api, pool):
    seeded = await _seeded(pool)
    body = {
        "project_id": seeded.project_id,
        "pipeline_slug": seeded.pipeline_slug,
        "collection_id": seeded.collection_id,
        "name": "nightly moths",
        "limit": 2,
        "shuffle": False,
    }
    response = await api.client.post("/jobs/", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == JobState.CREATED
    assert job["name"] == "nightly moths"
    assert job["dispatch_mode"] == "async_api"
    assert job["pipeline_slug"] == seeded.pipeline_slug
    assert job["limit"] == 2 and job["shuffle"] is False
    assert [s["key"] for s in job["progress"]["stages"]] == ["collect", "process", "results"]

    alias = {"project": seeded.project_id, "pipeline": seeded.pipeline_slug}
    response = await api.client.post(
        "/jobs", json={**alias, "source_image_collection_id": seeded.collection_id}
    )
    assert response.status_code == 201

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM ml_pipeline WHERE slug = %s", (seeded.pipeline_slug,)
        )
        pipeline_id = (await cur.fetchone())["id"]
    by_id = {"project_id": seeded.project_id, "collection_id": seeded.collection_id}
    for key in ("pipeline_id", "pipeline"):
        response = await api.client.post("/jobs/", json={**by_id, key: pipeline_id})
        assert response.status_code == 201
        assert response.json()["pipeline_slug"] == seeded.pipeline_slug


async def test_create_errors_name_the_field(api: Api, pool):
    seeded = await _seeded(pool)
    other = await _seeded(pool)
    base = {
        "project_id": seeded.project_id,
        "pipeline_slug": seeded.pipeline_slug,
        "collection_id": seeded.collection_id,
    }
    cases = [
        ({**base, "pipeline_slug": "no-such-pipeline"}, "pipeline"),
        ({k: v for k, v in base.items() if k != "project_id"}, "project_id"),
        ({k: v for k, v in base.items() if k != "pipeline_slug"}, "pipeline_slug"),
        ({**base, "collection_id": other.collection_id}, "collection"),
        ({**base, "collection_id": "abc"}, "collection_id"),
        ({**base, "limit": -1}, "limit"),
        ({**base, "dispatch_mode": "telepathy"}, "dispatch_mode"),
        ({**base, "project_id": 999_999_999}, "collection"),
    ]
    for body, field in cases:
        response = await api.client.post("/jobs/", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["field"] == field, response.json()
    assert (await api.client.post("/jobs/", content=b"{not json")).status_code == 400


async def test_create_with_start_now_starts_the_workflow(api: Api, pool, temporal_client):
    seeded = await _seeded(pool)
    response = await api.client.post(
        "/jobs/?start_now=1",
        json={
            "project_id": seeded.project_id,
            "pipeline_slug": seeded.pipeline_slug,
            "collection_id": seeded.collection_id,
        },
    )
    assert response.status_code == 201
    job_id = response.json()["id"]
    assert response.json()["status"] == JobState.PENDING
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job_id))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await _terminate(temporal_client, job_id)


async def test_run_then_cancel_a_started_workflow(api: Api, pool, temporal_client):
    job = await make_job(pool, status=JobState.CREATED)
    response = await api.client.post(f"/jobs/{job.id}/run/")
    assert response.status_code == 200
    assert response.json()["status"] == JobState.PENDING
    again = await api.client.post(f"/jobs/{job.id}/run")
    assert again.status_code == 200  # same workflow, still one run

    response = await api.client.post(f"/jobs/{job.id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == JobState.CANCELING
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job.id))
    history = [e async for e in handle.fetch_history_events()]
    assert any(e.HasField("workflow_execution_cancel_requested_event_attributes") for e in history)

    response = await api.client.post(f"/jobs/{job.id}/cancel/")
    assert response.status_code == 409
    assert response.json()["status"] == JobState.CANCELING
    assert response.json()["job_id"] == job.id
    response = await api.client.post(f"/jobs/{job.id}/run/")
    assert response.status_code == 409
    await _terminate(temporal_client, job.id)


async def test_cancel_a_job_that_never_started_revokes_it(api: Api, pool, temporal_client):
    job = await make_job(pool, status=JobState.CREATED)
    response = await api.client.post(f"/jobs/{job.id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == JobState.REVOKED
    assert response.json()["finished_at"] is not None

    conflict = await api.client.post(f"/jobs/{job.id}/cancel/")
    assert conflict.status_code == 409
    assert conflict.json()["status"] == JobState.REVOKED

    retried = await api.client.post(f"/jobs/{job.id}/retry/")
    assert retried.status_code == 200
    # Antenna's retry: RETRY, then at once its enqueue's PENDING (a new task id).
    assert retried.json()["status"] == JobState.PENDING
    assert retried.json()["progress"]["summary"]["progress"] == 0
    await _terminate(temporal_client, job.id)


async def test_retry_only_after_failure_or_revoke(api: Api, pool):
    for status in (JobState.CREATED, JobState.STARTED, JobState.SUCCESS, JobState.CANCELING):
        job = await make_job(pool, images=1, status=status)
        response = await api.client.post(f"/jobs/{job.id}/retry/")
        assert response.status_code == 409
        assert response.json()["status"] == status
        assert await job_status(pool, job.id) == status


async def test_actions_on_a_missing_job_are_404(api: Api):
    for path in ("run/", "cancel/", "retry/"):
        response = await api.client.post(f"/jobs/999999999999997/{path}")
        assert response.status_code == 404
        assert response.json()["job_id"] == 999999999999997
    assert (await api.client.get("/jobs/999999999999997/")).status_code == 404
    assert (await api.client.get("/jobs/not-a-number/")).status_code == 404


async def test_detail_has_progress_and_latest_logs(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    async with pool.connection() as conn:
        for i in range(5):
            await job_store.append_log(conn, job.id, f"line {i}")
        await job_store.append_log(conn, job.id, "it broke", level="ERROR")

    response = await api.client.get(f"/jobs/{job.id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == job.id
    assert body["progress"]["summary"]["status"] in {s.value for s in JobState}
    assert body["logs"]["stdout"][0].endswith("ERROR it broke")  # newest first
    assert body["logs"]["stdout"][-1].endswith("INFO line 0")
    assert body["logs"]["stderr"] == [body["logs"]["stdout"][0]]

    limited = await api.client.get(f"/jobs/{job.id}", params={"logs_limit": 2})
    assert len(limited.json()["logs"]["stdout"]) == 2
    for bad in ("0", "5001", "many"):
        response = await api.client.get(f"/jobs/{job.id}/", params={"logs_limit": bad})
        assert response.status_code == 400
        assert response.json()["field"] == "logs_limit"
