"""Issue 7, end to end: whatever a processing worker posts, the job still ends with exact counts.

A real job (workflow, aggregator, API over HTTP in-process) whose worker posts, beside ordinary
results, values that broke jobs before (1e-50 scores, 1e39 and 1e300 boxes, NaN, U+0000),
results of another task's image, and a result row the database refuses: the bad entries get a
400 naming them, the valid ones of the same request are saved once, the refused row fails only
its image (after a bounded number of attempts, with the reason in the job log), and the job
ends SUCCESS with every count exact.
"""

from __future__ import annotations

import json
from typing import Any

from antenna_db import job_store
from antenna_db.seed import seed
from core.states import JobState
from job_control.actions import JobActions
from storage import inbox
from storage.inbox import InboxEntry
from tests.helpers import eventually
from tests.helpers.api import app_with_workers
from tests.helpers.db import create_token, job_logs
from tests.helpers.jobs import entry, make_job, success_result

IMAGES = 12


async def fetch_all(client: Any, job_id: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []

    async def some() -> bool:
        response = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": IMAGES})
        tasks.extend(response.json()["tasks"])
        return len(tasks) >= IMAGES

    await eventually(some, within=60)
    return tasks


async def test_bad_values_and_a_refused_row_never_wedge_the_job(
    settings, pool, temporal_client
) -> None:
    async with pool.connection() as conn:
        seeded = await seed(conn, IMAGES)
        key = await create_token(conn, "robustness")
    job = (await make_job(pool, seeded=seeded, shuffle=False)).job
    async with app_with_workers(settings, pool, temporal_client, key) as client:
        await JobActions(pool, temporal_client, settings).run(job.id)
        # The last image's result is a row the database refuses (a label longer than
        # main_taxon.name holds), stored straight into the inbox as a faulty API would.
        tasks = await fetch_all(client, job.id)
        poisoned, tasks = tasks[-1], tasks[:-1]
        bad = success_result(poisoned)
        bad["detections"][0]["classifications"][0]["classification"] = "x" * 300
        async with pool.connection() as conn:
            await inbox.store(
                conn,
                job.id,
                [
                    InboxEntry(
                        image_id=int(poisoned["image_id"]),
                        reply_subject=poisoned["reply_subject"],
                        is_error=False,
                        payload=json.dumps(bad),
                    )
                ],
            )
        extreme = success_result(tasks[0])
        extreme["detections"][0]["classifications"][0]["scores"] = [1e-50, 0.5, 1e300]
        extreme["detections"][0]["bbox"]["x2"] = 1e39
        # A bare NaN in the first score (the text "0.6" was replaced once, and a timestamp such
        # as 12:00:30.61 held it first: 1 run in 100).
        nan_result = success_result(tasks[1])
        nan_result["detections"][0]["classifications"][0]["scores"][0] = "__NaN__"
        nan = json.dumps(nan_result).replace('"__NaN__"', "NaN")
        nul = success_result(tasks[2])
        nul["detections"][0]["classifications"][0]["classification"] = "Noct\u0000uidae"
        subject_1 = json.dumps(tasks[1]["reply_subject"])
        swapped = success_result(tasks[4])  # image 4's result under task 3's reply subject
        body = (
            '{"results": ['
            + ", ".join(
                [
                    json.dumps(entry(tasks[0], extreme)),
                    f'{{"reply_subject": {subject_1}, "result": {nan}}}',
                    json.dumps(entry(tasks[2], nul)),
                    json.dumps(entry(tasks[3], swapped)),
                    *(json.dumps(entry(t, success_result(t))) for t in tasks[4:]),
                ]
            )
            + "]}"
        )
        response = await client.post(
            f"/jobs/{job.id}/result/",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        answer = response.json()
        named = {e["index"]: e["field"] for e in answer["errors"]}
        assert named == {
            1: "results[1].result.detections[0].classifications[0].scores[0]",
            2: "results[2].result.detections[0].classifications[0].classification",
            3: "results[3].result.source_images",
        }
        assert answer["results_queued"] == len(tasks) - 3
        # The worker tries again with what it should have sent (its tasks were not acked).
        retry = {"results": [entry(t, success_result(t)) for t in tasks[1:4]]}
        assert (await client.post(f"/jobs/{job.id}/result/", json=retry)).status_code == 200

        async def final() -> JobState | None:
            async with pool.connection() as conn:
                status = await job_store.get_status(conn, job.id)
            return status if status in {JobState.SUCCESS, JobState.FAILURE} else None

        assert await eventually(final, within=120) == JobState.SUCCESS
    done = await job_store_job(pool, job.id)
    stages = {s.key: s for s in done.progress.stages}
    assert stages["process"].param("processed") == IMAGES
    assert stages["process"].param("failed") == 1
    assert stages["results"].param("captures") == IMAGES - 1
    refused = [m["message"] for m in await job_logs(pool, job.id) if "refused" in m["message"]]
    assert len(refused) == 1 and f"image {poisoned['image_id']}" in refused[0]
    assert "after 3 attempts" in refused[0]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT c.scores FROM job_classifications c JOIN job_detections d"
            " ON d.id = c.detection_id WHERE d.source_image_id = %s",
            (int(tasks[0]["image_id"]),),
        )
        assert [r["scores"] for r in await cur.fetchall()] == [[1e-50, 0.5, 1e300]]
        cur = await conn.execute(
            "SELECT bbox_x2 FROM job_detections WHERE source_image_id = %s",
            (int(tasks[0]["image_id"]),),
        )
        assert [r["bbox_x2"] for r in await cur.fetchall()] == [1e39]
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_detections WHERE job_id = %s AND bbox_x1 IS NOT NULL",
            (job.id,),
        )
        assert (await cur.fetchone())["n"] == IMAGES - 1


async def job_store_job(pool: Any, job_id: int) -> Any:
    async with pool.connection() as conn:
        return await job_store.get_job(conn, job_id)
