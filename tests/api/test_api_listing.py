"""GET /api/v2/jobs (the ADC's claim poll) and GET /api/v2/projects/."""

from __future__ import annotations

import json

from core.progress import new_ml_progress
from core.states import DispatchMode, JobState
from tests.helpers.api import Api
from tests.helpers.jobs import make_job


async def _results_stage_final(pool, job_id: int) -> None:
    progress = new_ml_progress()
    progress.update_stage("results", status=JobState.SUCCESS, progress=1.0)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET progress = %s::jsonb WHERE id = %s",
            (json.dumps(progress.as_json()), job_id),
        )


async def test_ids_only_incomplete_only_is_the_adc_claim_poll(api: Api, pool):
    active = await make_job(pool, images=1, status=JobState.STARTED)
    slug = active.seeded.pipeline_slug
    listed = {active.id}
    for status in (JobState.CREATED, JobState.PENDING, JobState.CANCELING, JobState.RETRY):
        listed.add((await make_job(pool, status=status, seeded=active.seeded)).id)
    for status in (JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED):
        await make_job(pool, status=status, seeded=active.seeded)
    results_done = await make_job(pool, status=JobState.STARTED, seeded=active.seeded)
    await _results_stage_final(pool, results_done.id)
    await make_job(
        pool, dispatch_mode=DispatchMode.SYNC_API, seeded=active.seeded, status=JobState.STARTED
    )
    other = await make_job(pool, images=1, status=JobState.STARTED)

    query = {
        "pipeline__slug__in": f"{slug},{other.seeded.pipeline_slug}x",
        "ids_only": "1",
        "incomplete_only": "1",
        "dispatch_mode": "async_api",
    }
    response = await api.client.get("/jobs", params=query)  # the ADC's spelling: no slash
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"count", "next", "previous", "results"}
    assert body["count"] == len(listed)
    assert len(body["results"]) == 1  # one random draw per poll
    assert body["results"][0]["id"] in listed
    assert body["results"][0] == {"id": body["results"][0]["id"], "pipeline_slug": slug}
    assert body["next"] is not None and body["previous"] is None

    seen = set()
    for _ in range(40):
        seen.add((await api.client.get("/jobs", params=query)).json()["results"][0]["id"])
    assert len(seen) > 1  # random order, not always the same job

    everything = await api.client.get("/jobs/", params={**query, "limit": 50})
    assert {r["id"] for r in everything.json()["results"]} == listed
    assert (await api.client.get("/jobs/", params={**query, "page_size": 3})).json()[
        "results"
    ].__len__() == 3


async def test_listing_filters_and_full_summaries(api: Api, pool):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await make_job(pool, status=JobState.SUCCESS, seeded=job.seeded)
    response = await api.client.get(
        "/jobs/", params={"project_id": job.seeded.project_id, "limit": 1}
    )
    body = response.json()
    assert body["count"] == 2
    assert len(body["results"]) == 1
    assert "offset=1" in body["next"]
    summary = body["results"][0]
    for key in ("id", "name", "status", "progress", "dispatch_mode", "pipeline_slug", "project_id"):
        assert key in summary
    assert summary["progress"]["stages"][0]["key"] == "collect"

    incomplete = await api.client.get(
        "/jobs", params={"project_id": job.seeded.project_id, "incomplete_only": "true"}
    )
    assert [r["id"] for r in incomplete.json()["results"]] == [job.id]
    page2 = await api.client.get(body["next"])
    assert page2.json()["previous"] is not None

    filtered = await api.client.get(
        "/jobs", params={"project_id": job.seeded.project_id, "dispatch_mode": "sync_api"}
    )
    assert filtered.json()["count"] == 0


async def test_listing_rejects_bad_filters(api: Api):
    for params, field in (
        ({"dispatch_mode": "carrier-pigeon"}, "dispatch_mode"),
        ({"project_id": "abc"}, "project_id"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"status": "DONE"}, "status"),
    ):
        response = await api.client.get("/jobs", params=params)
        assert response.status_code == 400, params
        assert response.json()["field"] == field


async def test_projects_list(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    response = await api.client.get("/projects/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    project = next(p for p in body["results"] if p["id"] == job.seeded.project_id)
    assert project["name"]
    assert (await api.client.get("/projects")).status_code == 200
