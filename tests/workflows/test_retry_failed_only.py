"""``job retry --failed-only`` and the API's ``{"failed_only": true}``, end to end: the new run
queues exactly the images the previous run failed (not those it never finished, not those it
processed), and ends with exact counts."""

from __future__ import annotations

from typing import Any

from antenna_db.seed import seed
from core.states import JobState
from tests.helpers import eventually
from tests.helpers.api import api_and_workers, start_over_api, take_tasks, tasks_now
from tests.helpers.db import fetch, get_job, image_statuses, job_logs, run_counters
from tests.helpers.jobs import entry, error_result, success_result
from tests.helpers.processes import invoke


async def _post(client: Any, job_id: int, ok: list[dict[str, Any]], bad: list[dict[str, Any]]):
    body = {
        "results": [entry(t, success_result(t, detections=1)) for t in ok]
        + [entry(t, error_result(t)) for t in bad]
    }
    answer = await client.post(f"/jobs/{job_id}/result/", json=body)
    assert answer.status_code == 200, answer.text


async def _status_is(pool: Any, job_id: int, *wanted: JobState) -> JobState:
    async def check() -> JobState | None:
        status = (await get_job(pool, job_id)).status
        return status if status in wanted else None

    found: JobState = await eventually(check, within=60)
    return found


async def _detections(pool: Any, collection_id: int) -> int:
    rows = await fetch(
        pool,
        "SELECT count(*) AS n FROM main_detection d JOIN main_sourceimagecollection_images c"
        " ON c.sourceimage_id = d.source_image_id WHERE c.sourceimagecollection_id = %s"
        " AND d.bbox IS NOT NULL AND d.bbox <> 'null'::jsonb",
        collection_id,
    )
    return int(rows[0]["n"])


async def test_api_retry_failed_only_queues_exactly_the_failed_images(
    settings, pool, temporal_client
):
    async with pool.connection() as conn:
        seeded = await seed(conn, 30)
    async with api_and_workers(settings, pool, temporal_client) as client:
        job_id = await start_over_api(client, seeded)
        tasks = await take_tasks(client, job_id, 30)
        ok, bad = tasks[:12], tasks[12:]
        await _post(client, job_id, ok, bad)
        assert await _status_is(pool, job_id, JobState.SUCCESS, JobState.FAILURE) == "FAILURE"
        failed = {int(t["image_id"]) for t in bad}
        before = await image_statuses(pool, job_id)
        assert {i for i, (s, _) in before.items() if s == "failed"} == failed

        # Refused with the reason: a finished job cannot be retried, a body flag must be a bool.
        wrong = await client.post(f"/jobs/{job_id}/retry/", json={"failed_only": "maybe"})
        assert wrong.status_code == 400, wrong.text
        retried = await client.post(f"/jobs/{job_id}/retry/", json={"failed_only": True})
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "PENDING"

        again = await take_tasks(client, job_id, 18)
        assert {int(t["image_id"]) for t in again} == failed
        await _post(client, job_id, again, [])
        assert await _status_is(pool, job_id, JobState.SUCCESS, JobState.FAILURE) == "SUCCESS"
        assert await tasks_now(client, job_id) == []
        detail = (await client.get(f"/jobs/{job_id}/")).json()
        refused = await client.post(f"/jobs/{job_id}/retry/", json={"failed_only": True})
        assert refused.status_code == 409, refused.text

    assert await run_counters(pool, job_id) == (18, 0)
    after = await image_statuses(pool, job_id)
    assert set(after) == failed and {s for s, _ in after.values()} == {"processed"}
    assert await _detections(pool, seeded.collection_id) == 30
    stages = {s["key"]: s for s in detail["progress"]["stages"]}
    collect = {p["key"]: p["value"] for p in stages["collect"]["params"]}
    process = {p["key"]: p["value"] for p in stages["process"]["params"]}
    assert collect["total_images"] == 18
    assert process["processed"] == 18 and process["failed"] == 0
    messages = [line["message"] for line in await job_logs(pool, job_id)]
    assert "Retry requested: only the 18 images that failed" in messages
    assert any(m.startswith("Collected 18 images: the images that failed") for m in messages)


async def test_cli_retry_failed_only_skips_what_the_cancelled_run_never_finished(
    settings,
    pool,
    temporal_client,
    cli_env,
):
    async with pool.connection() as conn:
        seeded = await seed(conn, 10)
        other_seed = await seed(conn, 2)
    async with api_and_workers(settings, pool, temporal_client) as client:
        job_id = await start_over_api(client, seeded)
        tasks = await take_tasks(client, job_id, 10)
        await _post(client, job_id, tasks[:2], tasks[2:5])

        async def five_saved() -> bool:
            return await run_counters(pool, job_id) == (2, 3)

        await eventually(five_saved, within=30)
        assert (await client.post(f"/jobs/{job_id}/cancel/")).status_code == 200
        assert await _status_is(pool, job_id, JobState.REVOKED) == "REVOKED"

        result = await invoke(cli_env, "job", "retry", str(job_id), "--failed-only")
        assert result.exit_code == 0, result.output
        again = await take_tasks(client, job_id, 3)
        assert {t["image_id"] for t in again} == {t["image_id"] for t in tasks[2:5]}
        await _post(client, job_id, again, [])
        assert await _status_is(pool, job_id, JobState.SUCCESS, JobState.FAILURE) == "SUCCESS"
        assert await tasks_now(client, job_id) == []

        # A run with no failed image: nothing to retry, and the answer says so.
        other = await start_over_api(client, other_seed)
        await take_tasks(client, other, 1)
        assert (await client.post(f"/jobs/{other}/cancel/")).status_code == 200
        assert await _status_is(pool, other, JobState.REVOKED) == "REVOKED"
        nothing = await client.post(f"/jobs/{other}/retry/?failed_only=1")
        assert nothing.status_code == 400, nothing.text
        assert nothing.json()["field"] == "failed_only"

    assert await run_counters(pool, job_id) == (3, 0)
    after = await image_statuses(pool, job_id)
    assert len(after) == 3 and {s for s, _ in after.values()} == {"processed"}
    assert await _detections(pool, seeded.collection_id) == 5
