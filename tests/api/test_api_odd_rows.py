"""Job rows antenna-jobs did not write and cannot fully parse: a job type Antenna added later, a
progress stage without ``name`` (issue 16, row 4). Listing, detail and cancel show them as they
are; none answers 500."""

from __future__ import annotations

import json

from core.states import JobState
from tests.helpers.api import Api
from tests.helpers.jobs import make_job

ODD_PROGRESS = {
    "summary": {"status": "CREATED", "progress": 0},
    "stages": [
        {"key": "delay", "status": "CREATED", "progress": 0, "params": []},
        {"key": "sync", "name": "Sync", "status": "CREATED", "progress": 0, "params": [{}]},
    ],
    "errors": [],
    "logs": [],
}


async def odd_job(pool, *, job_type: str | None = None, progress: dict | None = None) -> int:
    job = await make_job(pool, images=1)
    async with pool.connection() as conn:
        if job_type is not None:
            await conn.execute(
                "UPDATE jobs_job SET job_type_key = %s WHERE id = %s", (job_type, job.id)
            )
        if progress is not None:
            await conn.execute(
                "UPDATE jobs_job SET progress = %s::jsonb WHERE id = %s",
                (json.dumps(progress), job.id),
            )
    return job.id


async def test_a_job_type_added_by_antenna_later_is_shown_as_it_is(api: Api, pool):
    job_id = await odd_job(pool, job_type="tracking_sync")
    listed = await api.client.get("/jobs/", params={"limit": 1000})
    assert listed.status_code == 200
    mine = [r for r in listed.json()["results"] if r["id"] == job_id]
    assert mine and mine[0]["job_type"] == "tracking_sync"

    detail = await api.client.get(f"/jobs/{job_id}/")
    assert detail.status_code == 200
    assert detail.json()["job_type"] == "tracking_sync"

    cancelled = await api.client.post(f"/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == JobState.REVOKED  # it never started
    assert cancelled.json()["job_type"] == "tracking_sync"


async def test_a_progress_stage_without_a_name_is_shown_as_it_is(api: Api, pool):
    job_id = await odd_job(pool, progress=ODD_PROGRESS)
    listed = await api.client.get("/jobs/", params={"limit": 1000})
    assert listed.status_code == 200
    assert job_id in {r["id"] for r in listed.json()["results"]}

    detail = await api.client.get(f"/jobs/{job_id}/")
    assert detail.status_code == 200
    stages = detail.json()["progress"]["stages"]
    assert stages[0]["key"] == "delay" and "name" not in stages[0]
    assert stages[1]["params"] == [{}]

    cancelled = await api.client.post(f"/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == JobState.REVOKED


async def test_running_a_job_type_this_code_does_not_run_is_refused(api: Api, pool):
    job_id = await odd_job(pool, job_type="tracking_sync")
    response = await api.client.post(f"/jobs/{job_id}/run/")
    assert response.status_code == 400
    assert "'tracking_sync' is not one antenna-jobs runs" in response.text
    detail = await api.client.get(f"/jobs/{job_id}/")
    assert detail.json()["status"] == JobState.CREATED  # left as it was
