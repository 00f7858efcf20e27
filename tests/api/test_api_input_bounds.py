"""Issue 7: integers, text and nesting of every other endpoint are within what can be stored or
asked of NATS, else a 400 naming the field; bodies past the configured size are a 413."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from api.job_bodies import MAX_BATCH_SIZE
from core.states import JobState
from core.wire_types import INT4_MAX, NESTED_TOO_DEEPLY, NUL_MESSAGE, SURROGATE_MESSAGE
from tests.helpers.api import Api, serving_api
from tests.helpers.db import inbox_rows
from tests.helpers.jobs import entry, make_job, success_result
from tests.helpers.settings import with_settings


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def post_raw(api: Api, path: str, content: str | bytes):
    return await api.client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("batch_size", "status"), [(2**63, 400), (MAX_BATCH_SIZE + 1, 400), (MAX_BATCH_SIZE, 200)]
)
async def test_tasks_batch_size_has_a_maximum(api: Api, pool, streams, batch_size, status):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": batch_size})
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["field"] == "batch_size"
        assert str(MAX_BATCH_SIZE) in response.json()["detail"]
    else:
        assert len(response.json()["tasks"]) == 2


@pytest.mark.parametrize(("depth", "field"), [(100, "client_info"), (5000, "body")])
async def test_tasks_refuses_deep_client_info(api: Api, pool, depth, field):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    content = f'{{"batch_size": 1, "client_info": {nested(depth)}}}'
    response = await post_raw(api, f"/jobs/{job.id}/tasks/", content)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["errors"][0]["message"] == NESTED_TOO_DEEPLY


@pytest.mark.parametrize(
    "query",
    [
        {"offset": str(2**63)},
        {"offset": str(INT4_MAX + 1)},
        {"limit": str(2**63)},
        {"page_size": "100000"},
        {"project_id": str(2**70)},
        {"pipeline": str(2**63)},
        {"offset": "9" * 5000},
        {"pipeline__slug__in": "a,b\x00c"},
        {"pipeline__slug": "\x00"},
    ],
)
async def test_job_list_query_integers_and_text_are_bounded(api: Api, query):
    response = await api.client.get("/jobs/", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == next(iter(query))


async def test_job_list_accepts_the_largest_offset(api: Api):
    response = await api.client.get("/jobs/", params={"offset": str(INT4_MAX), "limit": "1000"})
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"limit": 10**12}, "limit", str(INT4_MAX)),
        ({"limit": INT4_MAX + 1}, "limit", str(INT4_MAX)),
        ({"project_id": 2**70}, "project_id", "less than or equal"),
        ({"collection_id": 2**63}, "collection_id", "less than or equal"),
        ({"name": "job\x00"}, "name", NUL_MESSAGE),
        ({"name": "job \ud800"}, "name", SURROGATE_MESSAGE),
        ({"pipeline_slug": "fake\x00"}, "pipeline_slug", NUL_MESSAGE),
        ({"pipeline": 2**64, "pipeline_slug": None}, "pipeline", "less than or equal"),
        ({"limit": float("nan")}, "limit", "valid integer"),
        ({"limit": float("inf")}, "limit", "valid integer"),
    ],
)
async def test_job_create_bounds_every_stored_value(api: Api, pool, change, field, message):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    body = {
        "project_id": job.seeded.project_id,
        "pipeline_slug": job.seeded.pipeline_slug,
        "collection_id": job.seeded.collection_id,
        **change,
    }
    response = await post_raw(api, "/jobs/", json.dumps(body))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert message in response.json()["errors"][0]["message"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM jobs_job WHERE project_id = %s", (job.seeded.project_id,)
        )
        assert (await cur.fetchone())["n"] == 1  # only the fixture's own job


async def create_in_new_project(api: Api, pool, pipeline: bool, **fields: Any) -> httpx.Response:
    """POST /jobs/ of ``fields`` in the project, on the collection (and with the pipeline) of a
    new started job."""
    seeded = (await make_job(pool, images=1, status=JobState.STARTED)).seeded
    body = {"project_id": seeded.project_id, "collection_id": seeded.collection_id, **fields}
    if pipeline:
        body["pipeline_slug"] = seeded.pipeline_slug
    return await api.client.post("/jobs/", json=body)


async def test_job_create_stores_the_largest_limit(api: Api, pool):
    response = await create_in_new_project(api, pool, pipeline=True, limit=INT4_MAX)
    assert response.status_code == 201, response.text
    assert response.json()["limit"] == INT4_MAX


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"method": "random", "size": 10**20}, "params.size"),
        ({"method": "random", "size": INT4_MAX + 1}, "params.size"),
        ({"method": "every_nth", "every": 2**40}, "params.every"),
        ({"method": "random", "size": 5, "seed": 2**64}, "params.seed"),
    ],
)
async def test_populate_params_are_bounded(api: Api, pool, params, field):
    response = await create_in_new_project(
        api, pool, pipeline=False, job_type_key="populate_captures_collection", params=params
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def _registration(**algorithm) -> dict:
    suffix = uuid.uuid4().hex[:8]
    return {
        "processing_service_name": f"bounds-{suffix}",
        "pipelines": [
            {
                "name": "P",
                "slug": f"bounds-{suffix}",
                "algorithms": [{"name": "A", "key": f"alg-{suffix}", **algorithm}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**_registration(), "processing_service_name": "svc\x00"}, "processing_service_name"),
        (_registration(version=2**40), "pipelines[0].algorithms[0].version"),
        (_registration(name="A \ud800"), "pipelines[0].algorithms[0].name"),
        (
            _registration(category_map={"data": [{"label": "a\x00"}], "labels": ["a"]}),
            "pipelines[0].algorithms[0].category_map.data[0].label",
        ),
        (
            _registration(category_map={"data": [{"score": float("nan")}], "labels": []}),
            "pipelines[0].algorithms[0].category_map.data[0].score",
        ),
    ],
)
async def test_registration_values_are_storable(api: Api, pool, body, field):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    response = await post_raw(
        api, f"/projects/{job.seeded.project_id}/pipelines/", json.dumps(body)
    )
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert any(e["field"].startswith(field) for e in errors), errors


async def test_registration_pipeline_version_is_int4(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    body = _registration()
    body["pipelines"][0]["version"] = 2**40
    response = await api.client.post(f"/projects/{job.seeded.project_id}/pipelines/", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "pipelines[0].version"


async def test_registration_refuses_deep_category_data(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    body = json.dumps(_registration(category_map={"data": ["@DEEP@"], "labels": []}))
    body = body.replace('"@DEEP@"', nested(3000))
    response = await post_raw(api, f"/projects/{job.seeded.project_id}/pipelines/", body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == NESTED_TOO_DEEPLY


# --- the body size limit ---

LIMIT = 4096


@pytest_asyncio.fixture(name="small_api")
async def small_api_fixture(settings, pool, temporal_client, nats_client) -> AsyncIterator[Api]:
    small = with_settings(settings, api={"max_body_bytes": LIMIT})
    async with serving_api(small, pool, temporal_client, nats_client, "small body limit") as api:
        yield api


def _big_results(tasks: list[dict]) -> bytes:
    body = json.dumps({"results": [entry(t, success_result(t, detections=20)) for t in tasks]})
    assert len(body) > LIMIT
    return body.encode()


async def test_a_body_over_the_limit_is_413_by_content_length(small_api: Api, pool, streams):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    tasks = (await small_api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 2})).json()
    content = _big_results(tasks["tasks"])
    response = await post_raw(small_api, f"/jobs/{job.id}/result/", content)
    assert response.status_code == 413
    assert response.json()["limit"] == LIMIT
    # Refused from its Content-Length, before reading.
    assert f"({len(content)} bytes)" in response.json()["detail"]
    assert str(LIMIT) in response.json()["detail"]
    assert await inbox_rows(pool, job.id) == []


async def test_a_chunked_body_over_the_limit_is_413_while_streaming(small_api: Api, pool, streams):
    job = await make_job(pool, images=2, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    tasks = (await small_api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 2})).json()
    content = _big_results(tasks["tasks"])
    sent = []

    async def chunks():
        for start in range(0, len(content), 1000):
            sent.append(start)
            yield content[start : start + 1000]

    response = await small_api.client.post(
        f"/jobs/{job.id}/result/", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["limit"] == LIMIT
    assert response.json()["detail"].startswith("Request body too large: ")  # no length known
    assert len(sent) < len(content) // 1000  # stopped reading past the limit
    assert await inbox_rows(pool, job.id) == []


async def test_a_body_under_the_limit_is_read(small_api: Api, pool, streams):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    (task,) = (
        await small_api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 1})
    ).json()["tasks"]
    content = json.dumps({"results": [entry(task, success_result(task))]}).encode()

    async def chunks():
        for start in range(0, len(content), 100):
            yield content[start : start + 100]

    assert len(content) < LIMIT
    response = await small_api.client.post(f"/jobs/{job.id}/result/", content=chunks())
    assert response.status_code == 200, response.text
    assert len(await inbox_rows(pool, job.id)) == 1


async def test_every_json_endpoint_has_the_limit(small_api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    padding = {"batch_size": 1, "client_info": {"pad": "x" * LIMIT}}
    response = await small_api.client.post(f"/jobs/{job.id}/tasks/", json=padding)
    assert response.status_code == 413
    response = await small_api.client.post("/jobs/", json={"name": "x" * LIMIT})
    assert response.status_code == 413
