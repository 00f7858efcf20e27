"""Issue 7: every value of a posted result is either stored or refused with a 400 naming the entry
and the field; the valid entries of the same request are stored once and acked either way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.states import JobState
from core.wire_types import FINITE_MESSAGE, NESTED_TOO_DEEPLY, NUL_MESSAGE, SURROGATE_MESSAGE
from tests.helpers import eventually
from tests.helpers.api import Api
from tests.helpers.db import inbox_rows
from tests.helpers.jobs import entry, error_result, make_job, success_result

CLS = "detections[0].classifications[0]"


def set_at(result: dict[str, Any], where: str, value: Any) -> None:
    """Set the field of ``result`` at the path ``where`` (``detections[0].bbox``) to ``value``."""
    target: Any = result
    parts = where.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    target[int(last) if last.isdigit() else last] = value


def splice(body: Any, **tokens: str) -> bytes:
    """``body`` as JSON with each string "@NAME@" replaced by the raw token ``tokens[NAME]``
    (``1e400``, a 2,000-deep array: text Python's json cannot write)."""
    text = json.dumps(body)
    for name, token in tokens.items():
        text = text.replace(f'"@{name}@"', token)
    return text.encode()


async def tasks_of(api: Api, pool, streams, n: int) -> tuple[Any, list[dict[str, Any]]]:
    job = await make_job(pool, images=n, status=JobState.STARTED)
    await streams.publish(job.id, job.images)
    response = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": n})
    tasks = response.json()["tasks"]
    assert len(tasks) == n
    return job, tasks


async def post_raw(api: Api, job_id: int, content: bytes):
    return await api.client.post(
        f"/jobs/{job_id}/result/", content=content, headers={"Content-Type": "application/json"}
    )


async def assert_stored_once_and_acked(pool, streams, job, tasks, stored: list[int]) -> None:
    """Exactly the entries at ``stored`` are in the inbox, once each; all of them are acked."""
    rows = await inbox_rows(pool, job.id)
    assert sorted(r["reply_subject"] for r in rows) == sorted(
        tasks[i]["reply_subject"] for i in stored
    )

    async def acked() -> bool:
        return (await streams.consumer(job.id)).num_ack_pending == len(tasks) - len(stored)

    await eventually(acked)


def first_classification(result: dict[str, Any]) -> dict[str, Any]:
    return result["detections"][0]["classifications"][0]


async def test_tiny_and_huge_finite_numbers_are_stored(api: Api, pool, streams):
    job, tasks = await tasks_of(api, pool, streams, 2)
    result = success_result(tasks[0])
    first_classification(result)["scores"] = [1e-50, 0.5, 1e300]
    result["detections"][0]["bbox"]["x2"] = 1e39
    result["detections"][0]["inference_time"] = 1e300
    body = {"results": [entry(tasks[0], result), entry(tasks[1], success_result(tasks[1]))]}
    # 1e-400 underflows to 0.0, as float64 does; what is stored says so.
    content = json.dumps(body).replace("1e+300", "1e300").encode()
    content = content.replace(b"0.5,", b"1e-400,", 1)
    response = await post_raw(api, job.id, content)
    assert response.status_code == 200, response.text
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0, 1])
    payload = (await inbox_rows(pool, job.id))[0]["payload"]
    # Stored with their values (in the JSON for a small result, as float8[] in result_arrays for
    # a big one); the saver writes them to main_classification as float8.
    assert [float(v) for v in first_classification(payload)["scores"]] == [1e-50, 0.0, 1e300]
    assert payload["detections"][0]["bbox"]["x2"] == 10**39
    assert payload["detections"][0]["inference_time"] == 10**300
    # Ignored and deprecated fields are not stored.
    assert "algorithms" not in payload and "errors" not in payload and "config" not in payload


@pytest.mark.parametrize(
    ("token", "where"),
    [
        ("NaN", f"{CLS}.scores[17]"),
        ("Infinity", "detections[0].bbox.x1"),
        ("-Infinity", f"{CLS}.logits[2]"),
        ("1e400", f"{CLS}.inference_time"),
        ("-1e400", "total_time"),
    ],
)
async def test_non_finite_numbers_are_refused_by_field(api: Api, pool, streams, token, where):
    job, tasks = await tasks_of(api, pool, streams, 3)
    bad = success_result(tasks[1])
    cls = first_classification(bad)
    cls["scores"] = [0.01] * 20
    cls["logits"] = [0.5] * 5
    set_at(bad, where, "@BAD@")
    body = {"results": [entry(t, success_result(t)) for t in tasks]}
    body["results"][1] = entry(tasks[1], bad)
    response = await post_raw(api, job.id, splice(body, BAD=token))
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["status"] == "partial"
    assert answer["field"] == f"results[1].result.{where}"
    assert answer["errors"] == [
        {"index": 1, "field": f"results[1].result.{where}", "message": FINITE_MESSAGE}
    ]
    assert answer["results_queued"] == 2
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0, 2])


@pytest.mark.parametrize(
    ("value", "where", "message"),
    [
        ("Noctua\u0000pronuba", f"{CLS}.classification", NUL_MESSAGE),
        ("\ud800", f"{CLS}.labels[3]", SURROGATE_MESSAGE),
        ("https://x/\udc00.jpg", "source_images[0].url", SURROGATE_MESSAGE),
        ("\u0000", "detections[0].algorithm.key", NUL_MESSAGE),
        ("ok\ud83d", "pipeline", SURROGATE_MESSAGE),
    ],
)
async def test_unstorable_text_is_refused_by_field(api: Api, pool, streams, value, where, message):
    job, tasks = await tasks_of(api, pool, streams, 3)
    bad = success_result(tasks[2])
    set_at(bad, where, value)
    results = [entry(t, success_result(t)) for t in tasks[:2]] + [entry(tasks[2], bad)]
    # json.dumps writes "\ud800" and "\u0000" as escapes, as a worker's JSON library does.
    response = await post_raw(api, job.id, json.dumps({"results": results}).encode())
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"index": 2, "field": f"results[2].result.{where}", "message": message}
    ]
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0, 1])


async def test_unstorable_reply_subject_and_error_text(api: Api, pool, streams):
    job, tasks = await tasks_of(api, pool, streams, 3)
    nul_subject = {"reply_subject": tasks[0]["reply_subject"] + "\u0000", "result": {"error": "x"}}
    bad_error = entry(tasks[1], error_result(tasks[1], message="CUDA \ud800 failure"))
    results = [nul_subject, bad_error, entry(tasks[2], error_result(tasks[2]))]
    response = await post_raw(api, job.id, json.dumps({"results": results}).encode())
    assert response.status_code == 400
    assert {(e["field"], e["message"]) for e in response.json()["errors"]} == {
        ("results[0].reply_subject", NUL_MESSAGE),
        ("results[1].result.error", SURROGATE_MESSAGE),
    }
    await assert_stored_once_and_acked(pool, streams, job, tasks, [2])


async def test_a_classification_needs_scores(api: Api, pool, streams):
    job, tasks = await tasks_of(api, pool, streams, 3)
    empty = success_result(tasks[0])
    first_classification(empty)["scores"] = []
    missing = success_result(tasks[1])
    del first_classification(missing)["scores"]
    valid = success_result(tasks[2])
    results = [entry(tasks[0], empty), entry(tasks[1], missing), entry(tasks[2], valid)]
    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": results})
    assert response.status_code == 400
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == {f"results[0].result.{CLS}.scores", f"results[1].result.{CLS}.scores"}
    assert "at least 1 item" in errors[f"results[0].result.{CLS}.scores"]
    await assert_stored_once_and_acked(pool, streams, job, tasks, [2])


@pytest.mark.parametrize("depth", [100, 2000, 50_000])
async def test_deeply_nested_entries_are_refused_alone(api: Api, pool, streams, depth):
    job, tasks = await tasks_of(api, pool, streams, 3)
    deep_result = success_result(tasks[1])
    deep_result["config"] = "@DEEP@"
    deep_entry = {"reply_subject": tasks[2]["reply_subject"], "extra": "@DEEP@"}
    deep_entry["result"] = success_result(tasks[2])
    results = [entry(tasks[0], success_result(tasks[0])), entry(tasks[1], deep_result), deep_entry]
    content = splice({"results": results}, DEEP="[" * depth + "]" * depth)
    response = await post_raw(api, job.id, content)
    assert response.status_code == 400, response.text
    assert {(e["field"], e["message"]) for e in response.json()["errors"]} == {
        ("results[1]", NESTED_TOO_DEEPLY),
        ("results[2]", NESTED_TOO_DEEPLY),
    }
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0])


@pytest.mark.parametrize("depth", [100, 5000])
async def test_deep_client_info_is_refused_and_the_results_kept(api: Api, pool, streams, depth):
    job, tasks = await tasks_of(api, pool, streams, 2)
    body = {"results": [entry(t, success_result(t)) for t in tasks], "client_info": "@DEEP@"}
    response = await post_raw(api, job.id, splice(body, DEEP='{"a":' * depth + "1" + "}" * depth))
    assert response.status_code == 400, response.text
    answer = response.json()
    problem = {"index": None, "field": "client_info", "message": NESTED_TOO_DEEPLY}
    assert answer["errors"] == [problem]
    assert answer["results_queued"] == 2
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0, 1])


async def test_mixed_bad_entries_in_the_tolerant_path(api: Api, pool, streams):
    """NaN makes the whole body unreadable to msgspec: the tolerant splitter still names each
    bad entry, and reads the rest, including entries that are not objects or not JSON."""
    job, tasks = await tasks_of(api, pool, streams, 5)
    nan = success_result(tasks[1])
    nan["total_time"] = "@NAN@"
    surrogate = error_result(tasks[3], message="@SURROGATE@")
    results = [
        entry(tasks[0], success_result(tasks[0])),
        entry(tasks[1], nan),
        "@BROKEN@",
        entry(tasks[3], surrogate),
        entry(tasks[4], error_result(tasks[4])),
        42,
    ]
    content = splice(
        {"results": results, "client_info": {"host": "gpu-1"}},
        NAN="NaN",
        SURROGATE='"\\udc00"',
        BROKEN='{"reply_subject": tru}',
    )
    response = await post_raw(api, job.id, content)
    assert response.status_code == 400, response.text
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(fields) == {
        "results[1].result.total_time",
        "results[2]",
        "results[3].result.error",
        "results[5]",
    }
    assert fields["results[1].result.total_time"] == FINITE_MESSAGE
    assert fields["results[2]"].startswith("JSON parse error")
    assert fields["results[5]"] == "Expected an object."
    await assert_stored_once_and_acked(pool, streams, job, tasks, [0, 4])


@pytest.mark.parametrize(
    "content",
    [b'{"results": [1, 2', b"\xff\xfe not json", b'{"results": [NaN] trailing', b"[NaN]"],
)
async def test_a_body_that_is_not_json_is_one_400(api: Api, pool, content):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    response = await post_raw(api, job.id, content)
    assert response.status_code == 400
    assert response.json()["field"] in {"body", "results"}
    assert await inbox_rows(pool, job.id) == []


@pytest.mark.parametrize("status", [JobState.CREATED, JobState.PENDING])
async def test_results_for_a_job_not_started_are_discarded(api: Api, pool, streams, status):
    job, tasks = await tasks_of(api, pool, streams, 2)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs_job SET status = %s WHERE id = %s", (status, job.id))
    results = [entry(t, success_result(t)) for t in tasks]
    response = await api.client.post(f"/jobs/{job.id}/result/", json={"results": results})
    assert response.status_code == 200
    assert response.json()["status"] == "discarded"
    assert await inbox_rows(pool, job.id) == []

    async def acked() -> bool:  # so they stop coming back
        return (await streams.consumer(job.id)).num_ack_pending == 0

    await eventually(acked)


async def test_discard_log_lines_are_throttled(api: Api, pool, streams):
    job, tasks = await tasks_of(api, pool, streams, 1)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs_job SET status = 'SUCCESS' WHERE id = %s", (job.id,))
    for _ in range(20):
        response = await api.client.post(
            f"/jobs/{job.id}/result/", json={"results": [entry(tasks[0], success_result(tasks[0]))]}
        )
        assert response.json()["status"] == "discarded"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM jobs_joblog"
            " WHERE job_id = %s AND message LIKE 'Discarded%%'",
            (job.id,),
        )
        row = await cur.fetchone()
    assert row["n"] == 1
