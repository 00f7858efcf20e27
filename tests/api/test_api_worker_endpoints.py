"""Wire shapes of the ADC worker-facing endpoints (docs/antenna-jobs.md sections 1, 2, 5, 6)."""

from __future__ import annotations

import asyncio

import pytest

from core.naming import parse_ack_subject
from core.states import DispatchMode, JobState
from storage import job_runs
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.db import NAMES, inbox_rows, job_status
from tests.helpers.jobs import entry, error_result, made_consumer, make_job, success_result


def parse(subject: str):
    found = parse_ack_subject(subject)
    assert found is not None
    return found


async def fetch(api: Api, job_id: int, batch_size, path_suffix: str = "/") -> list[dict]:
    response = await api.client.post(
        f"/jobs/{job_id}/tasks{path_suffix}", json={"batch_size": batch_size}
    )
    assert response.status_code == 200, response.text
    return response.json()["tasks"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("GET", "/jobs/"),
        ("POST", "/jobs/"),
        ("GET", "/jobs/1/"),
        ("POST", "/jobs/1/tasks/"),
        ("POST", "/jobs/1/result/"),
        ("POST", "/jobs/1/cancel/"),
        ("GET", "/projects/"),
        ("POST", "/projects/1/pipelines/"),
    ],
)
@pytest.mark.parametrize("header", [None, "Token not-a-real-key", "Bearer x", "Token"])
async def test_every_endpoint_needs_a_valid_token(api: Api, method, path, header):
    headers = {"Authorization": header} if header else {}
    api.client.headers.pop("Authorization", None)
    try:
        response = await api.client.request(method, path, headers=headers, json={"batch_size": 1})
    finally:
        api.client.headers["Authorization"] = f"Token {api.key}"
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert response.headers["www-authenticate"] == "Token"


async def test_tasks_returns_exactly_batch_size(api: Api, pool, streams):
    job = await make_job(pool, images=8, status=JobState.STARTED)
    await streams.publish(job.id, job.images)

    first = await fetch(api, job.id, 5)
    assert len(first) == 5
    for task in first:
        assert set(task) == {"id", "image_id", "image_url", "reply_subject"}
        assert task["id"] == task["image_id"]
        prefix = NAMES.ack_prefix(job.id, made_consumer(job.id))
        assert task["reply_subject"].startswith(prefix)
    urls = dict((str(i), u) for i, u in job.images)
    assert all(urls[t["image_id"]] == t["image_url"] for t in first)

    rest = await fetch(api, job.id, 5, path_suffix="")  # no trailing slash: no redirect
    assert len(rest) == 3
    assert {t["image_id"] for t in first + rest} == {str(i) for i, _ in job.images}
    assert await fetch(api, job.id, 5) == []
    info = await streams.consumer(job.id)
    assert info.num_ack_pending == 8 and info.num_pending == 0


@pytest.mark.parametrize("bad", ["invalid", None, "", 0, -3, 1.5, True, [4], {"n": 1}, "missing"])
async def test_tasks_rejects_invalid_batch_size(api: Api, pool, bad):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    body = {} if bad == "missing" else {"batch_size": bad}
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == "batch_size"
    assert "batch_size" in response.json()["detail"]


async def test_tasks_rejects_a_bare_list_body(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json=[{"batch_size": 1}])
    assert response.status_code == 400


async def test_tasks_accepts_numeric_strings_and_client_info(api: Api, pool, streams):
    job = await make_job(pool, images=3, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    response = await api.client.post(
        f"/jobs/{job.id}/tasks/", json={"batch_size": "2", "client_info": {"host": "gpu-1"}}
    )
    assert response.status_code == 200
    assert len(response.json()["tasks"]) == 2


async def test_tasks_only_for_async_jobs_with_a_pipeline(api: Api, pool):
    sync_job = await make_job(
        pool, images=1, dispatch_mode=DispatchMode.SYNC_API, status=JobState.STARTED
    )
    response = await api.client.post(f"/jobs/{sync_job.id}/tasks/", json={"batch_size": 1})
    assert response.status_code == 400
    assert "Only async_api jobs have fetchable tasks" in response.json()["detail"]

    no_pipeline = await make_job(pool, images=1, status=JobState.STARTED)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs_job SET pipeline_id = NULL WHERE id = %s", (no_pipeline.id,)
        )
    response = await api.client.post(f"/jobs/{no_pipeline.id}/tasks/", json={"batch_size": 1})
    assert response.status_code == 400
    assert response.json()["field"] == "pipeline"

    response = await api.client.post("/jobs/999999999999999/tasks/", json={"batch_size": 1})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "status",
    [
        JobState.CREATED,
        JobState.PENDING,
        JobState.CANCELING,
        JobState.REVOKED,
        JobState.SUCCESS,
        JobState.FAILURE,
    ],
)
async def test_tasks_empty_unless_job_is_active(api: Api, pool, streams, status):
    job = await make_job(pool, images=4, status=status)
    await streams.publish(job.id, job.images)
    assert await fetch(api, job.id, 4) == []
    info = await streams.consumer(job.id)
    assert info.num_pending == 4 and info.num_ack_pending == 0


async def test_tasks_stop_at_once_when_the_job_is_canceling(api: Api, pool, streams):
    job = await make_job(pool, images=6, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    assert len(await fetch(api, job.id, 2)) == 2
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs_job SET status = 'CANCELING' WHERE id = %s", (job.id,))
    assert await fetch(api, job.id, 2) == []


async def test_tasks_empty_when_the_stream_does_not_exist_yet(api: Api, pool):
    job = await make_job(pool, images=2, status=JobState.RETRY)
    assert await fetch(api, job.id, 2) == []


async def test_tasks_survive_the_stream_being_deleted(api: Api, pool, streams):
    job = await make_job(pool, images=4, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    assert len(await fetch(api, job.id, 1)) == 1
    await streams.delete(job.id)
    assert await fetch(api, job.id, 2) == []


async def test_concurrent_fetches_get_disjoint_tasks(api: Api, pool, streams):
    job = await make_job(pool, images=120, status=JobState.STARTED)
    await streams.publish(job.id, job.images)

    batches = await asyncio.gather(*(fetch(api, job.id, 7) for _ in range(24)))
    ids = [t["image_id"] for batch in batches for t in batch]
    assert len(ids) == len(set(ids)) == 120
    assert all(len(batch) <= 7 for batch in batches)
    subjects = [t["reply_subject"] for batch in batches for t in batch]
    assert len(set(subjects)) == 120


async def test_result_stores_then_acks(api: Api, pool, streams):
    job = await make_job(pool, images=5, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    tasks = await fetch(api, job.id, 5)
    results = [entry(t, success_result(t, detections=2)) for t in tasks[:3]]
    results += [entry(tasks[3], error_result(tasks[3])), entry(tasks[4], error_result(None))]

    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": results})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["job_id"] == job.id
    assert body["results_queued"] == 5
    assert [t["reply_subject"] for t in body["tasks"]] == [r["reply_subject"] for r in results]
    assert {t["status"] for t in body["tasks"]} == {"queued"}

    rows = await inbox_rows(pool, job.id)
    assert [str(r["id"]) for r in rows] == [t["task_id"] for t in body["tasks"]]
    # An error result that names no image is stored with its task's image.
    assert [r["image_id"] for r in rows] == [int(t["image_id"]) for t in tasks[:5]]
    assert [r["is_error"] for r in rows] == [False, False, False, True, True]
    assert len(rows[0]["payload"]["detections"]) == 2
    assert "config" not in rows[0]["payload"]

    async def all_acked() -> bool:
        return (await streams.consumer(job.id)).num_ack_pending == 0

    await eventually(all_acked)


async def test_result_without_trailing_slash_and_numeric_ids(api: Api, pool, streams):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    (task,) = await fetch(api, job.id, 1)
    result = success_result(task)
    result["source_images"][0]["id"] = int(task["image_id"])
    response = await api.client.post(
        f"/jobs/{job.id}/result", json={"results": [entry(task, result)]}
    )
    assert response.status_code == 200
    assert (await inbox_rows(pool, job.id))[0]["image_id"] == int(task["image_id"])


async def test_result_partial_400_keeps_the_valid_entries(api: Api, pool, streams):
    job = await make_job(pool, images=8, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    tasks = await fetch(api, job.id, 8)
    bad_bbox = success_result(tasks[2])
    bad_bbox["detections"][0]["bbox"]["x1"] = "left"
    bad_image = error_result(tasks[5])
    bad_image["image_id"] = "img-5"
    results = [
        entry(tasks[0], success_result(tasks[0])),
        {"result": success_result(tasks[1])},
        entry(tasks[2], bad_bbox),
        {"reply_subject": tasks[3]["reply_subject"]},
        entry(tasks[4], error_result(tasks[4])),
        entry(tasks[5], bad_image),
        {"reply_subject": "$JS.ACK.job_1.job-1-consumer.1.1.1.1.0", "result": error_result(None)},
        "not an object",
    ]
    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": results})
    assert response.status_code == 400
    body = response.json()
    fields = {e["field"] for e in body["errors"]}
    assert fields == {
        "results[1].reply_subject",
        "results[2].result.detections[0].bbox.x1",
        "results[3].result",
        "results[5].result.image_id",
        "results[6].reply_subject",
        "results[7]",
    }
    assert body["field"] == "results[1].reply_subject"
    assert body["results_queued"] == 2
    assert [t["reply_subject"] for t in body["tasks"]] == [
        tasks[0]["reply_subject"],
        tasks[4]["reply_subject"],
    ]
    rows = await inbox_rows(pool, job.id)
    assert [r["image_id"] for r in rows] == [int(tasks[0]["image_id"]), int(tasks[4]["image_id"])]

    async def two_acked() -> bool:
        return (await streams.consumer(job.id)).num_ack_pending == 6

    await eventually(two_acked)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"reply_subject": "x", "result": {"error": "e"}}], "results"),
        ({}, "results"),
        ({"results": {"a": 1}}, "results"),
        ("text", "body"),
    ],
)
async def test_result_body_must_be_a_results_object(api: Api, pool, body, field):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    response = await api.client.post(f"/jobs/{job.id}/result/", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert await inbox_rows(pool, job.id) == []


async def test_result_for_unknown_job_is_404(api: Api):
    response = await api.client.post("/jobs/999999999999998/result/", json={"results": []})
    assert response.status_code == 404


@pytest.mark.parametrize("status", [JobState.CANCELING, JobState.REVOKED, JobState.SUCCESS])
async def test_late_results_are_discarded_and_acked(api: Api, pool, streams, status):
    job = await make_job(pool, images=3, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    tasks = await fetch(api, job.id, 3)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs_job SET status = %s WHERE id = %s", (status, job.id))

    results = [entry(t, success_result(t)) for t in tasks]
    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": results})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "discarded"
    assert body["job_id"] == job.id
    assert body["results_queued"] == 0
    assert len(body["tasks"]) == 3
    assert await inbox_rows(pool, job.id) == []
    assert await job_status(pool, job.id) == status

    async def acked() -> bool:
        return (await streams.consumer(job.id)).num_ack_pending == 0

    await eventually(acked)


async def test_a_late_result_of_an_earlier_run_is_refused_and_acks_nothing(api: Api, pool, streams):
    """Every run's consumer carries Antenna's name (so Antenna's cancel finds it): a result of
    an earlier run, whose ack subject names the same stream and consumer and a sequence the new
    stream also has, is refused by its message timestamp, stored nowhere, and acks nothing of
    the new run (also when this API process handed that task out itself)."""
    job = await make_job(pool, images=3, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    old = await fetch(api, job.id, 3)

    # A new run of the job: the stream made anew (sequences from 1), same consumer name.
    await streams.delete(job.id)
    async with pool.connection() as conn:
        await job_runs.take(conn, job.id, "second-run", made_consumer(job.id))
        await conn.execute("UPDATE job_runs SET collected_at = now() WHERE job_id = %s", (job.id,))
    await streams.create(job.id)
    await streams.publish(job.id, job.images)
    new = await fetch(api, job.id, 3)
    assert sorted(parse(t["reply_subject"]).stream_seq for t in new) == sorted(
        parse(t["reply_subject"]).stream_seq for t in old
    )

    late = [entry(t, success_result(t)) for t in old]
    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": late})
    assert response.status_code == 400
    body = response.json()
    assert body["results_queued"] == 0
    assert all("earlier run" in e["message"] for e in body["errors"])
    assert await inbox_rows(pool, job.id) == []
    assert (await streams.consumer(job.id)).num_ack_pending == 3  # the new run's, none acked

    # The new run's own results are taken and acked.
    response = await api.client.post(
        f"/jobs/{job.id}/result/", json={"results": [entry(t, success_result(t)) for t in new]}
    )
    assert response.status_code == 200, response.text

    async def acked() -> bool:
        return (await streams.consumer(job.id)).num_ack_pending == 0

    await eventually(acked)
