"""Issue 17 row 2: one project's registration never changes what another project uses, and
links only the caller's project (in-process app, real PostgreSQL). A conflicting registration is
a 400 naming the field (pipeline slugs and algorithm keys are unique in Antenna's schema, so
there is no "own version" of them to make); a processing service name another project's service
has gets a service of the caller's own."""

from __future__ import annotations

import uuid
from typing import Any

from antenna_db import pipelines, users
from antenna_db.seed import CLASSIFIER_KEY, CLASSIFIER_LABELS, DETECTOR_KEY, seed
from antenna_db.users import Role
from core.states import JobState
from tests.helpers.api import Api, http_client
from tests.helpers.jobs import make_job


async def one(pool, sql: str, *args: Any) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
        return None if row is None else next(iter(row.values()))


def _detector(**fields: Any) -> dict[str, Any]:
    return {"name": "Fake Detector", "key": DETECTOR_KEY, "task_type": "localization", **fields}


def _classifier() -> dict[str, Any]:
    return {
        "name": "Fake Classifier",
        "key": CLASSIFIER_KEY,
        "task_type": "classification",
        "category_map": {"data": [], "labels": CLASSIFIER_LABELS},
    }


def _body(service: str, slug: str, *algorithms: dict[str, Any]) -> dict[str, Any]:
    return {
        "processing_service_name": service,
        "pipelines": [{"name": f"Pipeline {slug}", "slug": slug, "algorithms": list(algorithms)}],
    }


async def _two_projects(pool) -> tuple[Any, Any, str, str, int]:
    """Project A with a running job of its pipeline, project B, their MLDataManagers' keys."""
    job = await make_job(pool, images=1, status=JobState.STARTED)
    async with pool.connection() as conn:
        other = await seed(conn, 1)
        key_a = await users.create_token_user(
            conn, "A", project_id=job.seeded.project_id, role=Role.ML_DATA_MANAGER
        )
        key_b = await users.create_token_user(
            conn, "B", project_id=other.project_id, role=Role.ML_DATA_MANAGER
        )
    return job.seeded, other, key_a, key_b, job.id


async def test_an_algorithm_another_project_uses_is_never_changed(api: Api, pool):
    _, seeded_b, _, key_b, job_a = await _two_projects(pool)
    slug = f"b-own-{uuid.uuid4().hex[:8]}"
    url = f"/projects/{seeded_b.project_id}/pipelines/"
    async with http_client(api.app, key_b) as client:
        for changed, field in (
            (_detector(task_type="evil"), "task_type"),
            (_detector(task_type=None), "task_type"),
            (_detector(uri="https://example.org/evil"), "uri"),
        ):
            refused = await client.post(url, json=_body(f"svc-{slug}", slug, changed))
            assert refused.status_code == 400, refused.text
            assert refused.json()["field"] == f"pipelines[0].algorithms[0].{field}"
            assert "projects you cannot manage" in refused.json()["detail"]
        # Nothing of a refused registration was written.
        assert await one(pool, "SELECT count(*) FROM ml_pipeline WHERE slug = %s", slug) == 0
        assert (
            await one(
                pool, "SELECT count(*) FROM ml_processingservice WHERE name = %s", f"svc-{slug}"
            )
            == 0
        )
        # The same algorithm as it is: B's own new pipeline may use it.
        same = await client.post(url, json=_body(f"svc-{slug}", slug, _detector(), _classifier()))
        assert same.status_code == 201, same.text
    assert (
        await one(pool, "SELECT task_type FROM ml_algorithm WHERE key = %s", DETECTOR_KEY)
        == "localization"
    )
    async with pool.connection() as conn:
        context = await pipelines.load(conn, job_a)
    assert {a.key: a.task_type for a in context.algorithms.values()} == {
        DETECTOR_KEY: "localization",
        CLASSIFIER_KEY: "classification",
    }


async def test_a_pipeline_another_project_uses_is_linked_but_never_changed(api: Api, pool):
    seeded_a, seeded_b, _, key_b, _ = await _two_projects(pool)
    url = f"/projects/{seeded_b.project_id}/pipelines/"
    extra = {"name": f"Extra {uuid.uuid4().hex[:6]}", "key": f"extra-{uuid.uuid4().hex[:8]}"}
    shared = seeded_a.pipeline_slug
    count_algorithms = "SELECT count(*) FROM ml_pipeline_algorithms WHERE pipeline_id = %s"
    async with http_client(api.app, key_b) as client:
        refused = await client.post(
            url, json=_body("svc-b", shared, _detector(), _classifier(), extra)
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["field"] == "pipelines[0].algorithms[2].key"
        assert await one(pool, count_algorithms, seeded_a.pipeline_id) == 2
        assert (
            await one(pool, "SELECT count(*) FROM ml_algorithm WHERE key = %s", extra["key"]) == 0
        )
        linked = await client.post(url, json=_body("svc-b", shared, _detector(), _classifier()))
        assert linked.status_code == 201, linked.text
        assert linked.json()["error"] is None
    assert await one(pool, count_algorithms, seeded_a.pipeline_id) == 2
    assert (
        await one(
            pool,
            "SELECT count(*) FROM ml_projectpipelineconfig WHERE pipeline_id = %s"
            " AND project_id = %s",
            seeded_a.pipeline_id,
            seeded_b.project_id,
        )
        == 1
    )


async def test_another_projects_processing_service_is_neither_linked_nor_marked_live(
    api: Api, pool
):
    seeded_a, seeded_b, key_a, key_b, _ = await _two_projects(pool)
    name = f"AMI Data Companion (gpu-{uuid.uuid4().hex[:6]})"
    async with http_client(api.app, key_a) as client:
        mine = await client.post(
            f"/projects/{seeded_a.project_id}/pipelines/", json=_body(name, seeded_a.pipeline_slug)
        )
    assert mine.status_code == 201, mine.text
    service_a = mine.json()["processing_service_id"]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE ml_processingservice SET last_seen = NULL, last_seen_live = false"
            " WHERE id = %s",
            (service_a,),
        )
    async with http_client(api.app, key_b) as client:
        url = f"/projects/{seeded_b.project_id}/pipelines/"
        theirs = await client.post(url, json=_body(name, seeded_b.pipeline_slug))
        again = await client.post(url, json=_body(name, seeded_b.pipeline_slug))
    assert theirs.status_code == again.status_code == 201, theirs.text
    service_b = theirs.json()["processing_service_id"]
    assert service_b != service_a and again.json()["processing_service_id"] == service_b
    projects_of = (
        "SELECT array_agg(project_id ORDER BY project_id) FROM ml_processingservice_projects"
        " WHERE processingservice_id = %s"
    )
    assert await one(pool, projects_of, service_a) == [seeded_a.project_id]
    assert await one(pool, projects_of, service_b) == [seeded_b.project_id]
    assert (
        await one(pool, "SELECT last_seen_live FROM ml_processingservice WHERE id = %s", service_a)
        is False
    )
    # A superuser may manage both projects: it links B to the service as Antenna does.
    linked = await api.client.post(
        f"/projects/{seeded_b.project_id}/pipelines/", json=_body(name, seeded_b.pipeline_slug)
    )
    assert linked.json()["processing_service_id"] == service_a
