"""Worker registration (POST /projects/{id}/pipelines/) and poll-driven liveness heartbeats."""

from __future__ import annotations

import uuid

from core.states import JobState
from tests.helpers.api import Api
from tests.helpers.jobs import make_job


def _pipelines(slug: str, detector: str, classifier: str) -> list[dict]:
    return [
        {
            "name": f"Pipeline {slug}",
            "slug": slug,
            "version": 2,
            "description": "moths",
            "algorithms": [
                {"name": "Detector", "key": detector, "task_type": "localization"},
                {
                    "name": "Classifier",
                    "key": classifier,
                    "task_type": "classification",
                    "category_map": {"data": [], "labels": ["a", "b"]},
                },
            ],
            "stages": [],
        },
        {
            "name": "Second",
            "slug": f"{slug}-2",
            "algorithms": [{"name": "Detector", "key": detector}],
        },
    ]


async def _service(pool, name: str) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM ml_processingservice WHERE name = %s", (name,))
        row = await cur.fetchone()
        assert row is not None
        return row


async def test_registration_creates_then_updates(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    project_id = job.seeded.project_id
    suffix = uuid.uuid4().hex[:8]
    slug, detector, classifier = f"reg-{suffix}", f"det-{suffix}", f"cls-{suffix}"
    name = f"AMI Data Companion (host-{suffix})"
    body = {"processing_service_name": name, "pipelines": _pipelines(slug, detector, classifier)}

    response = await api.client.post(f"/projects/{project_id}/pipelines/", json=body)
    assert response.status_code == 201, response.text
    first = response.json()
    assert first["success"] is True
    assert first["pipelines"] == [slug, f"{slug}-2"]
    assert first["pipelines_created"] == [slug, f"{slug}-2"]
    assert sorted(first["algorithms_created"]) == sorted([detector, classifier])
    assert "timestamp" in first and first["error"] is None

    service = await _service(pool, name)
    assert service["endpoint_url"] is None
    assert service["last_seen_live"] is True and service["last_seen"] is not None
    assert first["processing_service_id"] == service["id"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM ml_projectpipelineconfig pp JOIN ml_pipeline p"
            " ON p.id = pp.pipeline_id WHERE pp.project_id = %s AND p.slug LIKE %s",
            (project_id, f"reg-{suffix}%"),
        )
        assert (await cur.fetchone())["n"] == 2
        cur = await conn.execute(
            "SELECT count(*) AS n FROM ml_pipeline_algorithms pa JOIN ml_pipeline p"
            " ON p.id = pa.pipeline_id WHERE p.slug LIKE %s",
            (f"reg-{suffix}%",),
        )
        assert (await cur.fetchone())["n"] == 3
        cur = await conn.execute(
            "SELECT count(*) AS n FROM ml_processingservice_projects"
            " WHERE processingservice_id = %s AND project_id = %s",
            (service["id"], project_id),
        )
        assert (await cur.fetchone())["n"] == 1

    again = await api.client.post(f"/projects/{project_id}/pipelines", json=body)
    assert again.status_code == 201
    assert again.json()["pipelines_created"] == []
    assert again.json()["algorithms_created"] == []
    assert again.json()["processing_service_id"] == service["id"]


async def test_registration_errors_name_the_field(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    url = f"/projects/{job.seeded.project_id}/pipelines/"
    response = await api.client.post(url, json={"pipelines": []})
    assert response.status_code == 400
    assert response.json()["field"] == "processing_service_name"
    response = await api.client.post(
        url, json={"processing_service_name": "x", "pipelines": [{"name": "no slug"}]}
    )
    assert response.status_code == 400
    assert response.json()["field"] == "pipelines[0].slug"
    response = await api.client.post(
        "/projects/999999999/pipelines/", json={"processing_service_name": "x", "pipelines": []}
    )
    assert response.status_code == 404


async def _register(api: Api, project_id: int, slug: str, name: str) -> None:
    body = {
        "processing_service_name": name,
        "pipelines": [{"name": slug, "slug": slug, "algorithms": []}],
    }
    response = await api.client.post(f"/projects/{project_id}/pipelines/", json=body)
    assert response.status_code == 201


async def _forget_seen(pool, name: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE ml_processingservice SET last_seen = NULL, last_seen_live = false"
            " WHERE name = %s",
            (name,),
        )


async def test_polls_mark_the_pipelines_async_services_seen_throttled(api: Api, pool, streams):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    name = f"worker-{uuid.uuid4().hex[:8]}"
    await _register(api, job.seeded.project_id, job.seeded.pipeline_slug, name)

    await _forget_seen(pool, name)
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
    assert response.status_code == 200
    assert (await _service(pool, name))["last_seen"] is not None

    await _forget_seen(pool, name)
    await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
    assert (await _service(pool, name))["last_seen"] is None  # throttled: once per 30 s

    api.app.state.context.liveness.throttle.interval = 0  # as if 30 s had passed
    await api.client.post(f"/jobs/{job.id}/result/", json={"results": []})
    assert (await _service(pool, name))["last_seen_live"] is True

    await _forget_seen(pool, name)
    await api.client.get(
        "/jobs", params={"pipeline__slug__in": job.seeded.pipeline_slug, "ids_only": 1}
    )
    assert (await _service(pool, name))["last_seen"] is not None

    await _forget_seen(pool, name)
    await api.client.get("/jobs", params={"project_id": job.seeded.project_id})
    assert (await _service(pool, name))["last_seen"] is not None
