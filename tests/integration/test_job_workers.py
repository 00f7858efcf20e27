"""Which workers serve a job, and when it will end (issue 19 item 5): two workers of one job
through the real API, Temporal workers, Postgres, NATS and Redis. One names itself in
``client_info``; the other, like the ADC, sends none and is named by the processing service its
user registered. The job's log, progress, detail, ``status`` overview and metrics list them."""

from __future__ import annotations

from datetime import timedelta

from antenna_db import job_store
from antenna_db.seed import seed
from cli.fakes.results import result_document
from core.schemas import PipelineProcessingTask
from core.states import JobState
from job_control.metrics import overview_metrics
from job_control.overview import gather
from storage import job_workers
from tests.helpers import eventually
from tests.helpers.api import app_with_workers, start_over_api
from tests.helpers.db import NAMES, create_token

IMAGES = 40
GPU = {"User-Agent": "gpu-worker/1.0"}
ADC = {"User-Agent": "AMI-Data-Companion/0.9"}


async def _serve(client, job_id: int, slug: str, headers, count: int, info=None) -> int:
    """Fetch up to ``count`` tasks and post a result for each; the number posted."""
    body = {"batch_size": count, **({"client_info": info} if info else {})}
    got = await client.post(f"/jobs/{job_id}/tasks/", json=body, headers=headers)
    assert got.status_code == 200, got.text
    tasks = [PipelineProcessingTask.model_validate(t) for t in got.json()["tasks"]]
    if not tasks:
        return 0
    results = [result_document(task, slug, seed=1) for task in tasks]
    posted = await client.post(
        f"/jobs/{job_id}/result/",
        json={"results": results, **({"client_info": info} if info else {})},
        headers=headers,
    )
    assert posted.status_code == 200, posted.text
    return len(tasks)


def _params(progress: dict, stage: str = "process") -> dict:
    for s in progress["stages"]:
        if s["key"] == stage:
            return {p["key"]: p["value"] for p in s["params"]}
    return {}


async def _log(pool, job_id: int) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT message FROM jobs_joblog WHERE job_id = %s ORDER BY id", (job_id,)
        )
        return [r["message"] for r in await cur.fetchall()]


async def test_workers_of_a_job_are_listed_everywhere(settings, pool, temporal_client):
    settings = settings.model_copy(
        update={
            "jobs": settings.jobs.model_copy(update={"worker_idle_after": timedelta(seconds=2)})
        }
    )
    async with pool.connection() as conn:
        seeded = await seed(conn, IMAGES)
        key = await create_token(conn, "job workers")
    slug = seeded.pipeline_slug
    async with app_with_workers(settings, pool, temporal_client, key) as client:
        registered = await client.post(
            f"/projects/{seeded.project_id}/pipelines/",
            json={"processing_service_name": "adc-station-7", "pipelines": []},
            headers=ADC,
        )
        assert registered.status_code == 201, registered.text
        job_id = await start_over_api(client, seeded)

        async def fetched() -> int:
            return await _serve(client, job_id, slug, GPU, 10, {"hostname": "gpu-3"})

        gpu = await eventually(fetched, within=60)
        adc = await _serve(client, job_id, slug, ADC, 10)
        assert (gpu, adc) == (10, 10)

        # Both are listed while the job runs; nobody calls for longer than the idle setting.
        async def both_idle() -> list[str] | None:
            lines = await _log(pool, job_id)
            idle = [line for line in lines if " idle for " in line]
            return lines if len(idle) == 2 else None

        lines = await eventually(both_idle, within=60)
        started = [line for line in lines if "started fetching tasks" in line]
        assert len(started) == 2, lines
        assert any(line.startswith("Worker gpu-3 (user ") for line in started), started
        assert any(line.startswith("Worker adc-station-7 (user ") for line in started), started
        assert all("gpu-worker/1.0" in line or "AMI-Data-Companion" in line for line in started)

        async def shown() -> dict | None:
            detail = (await client.get(f"/jobs/{job_id}/")).json()
            params = _params(detail["progress"])
            return detail if "gpu-3" in str(params.get("serving")) and "eta" in params else None

        detail = await eventually(shown, within=60)
        workers = {w["name"]: w for w in detail["workers"]}
        assert set(workers) == {"gpu-3", "adc-station-7"}
        assert workers["gpu-3"]["results_posted"] == 10
        assert workers["gpu-3"]["tasks_fetched"] == 10
        assert workers["gpu-3"]["client_info"] == {"hostname": "gpu-3"}
        assert workers["adc-station-7"]["service"] == "adc-station-7"
        assert workers["adc-station-7"]["user_agent"] == "AMI-Data-Companion/0.9"
        assert all(w["serving"] and w["images_per_second"] > 0 for w in workers.values())
        assert detail["images_per_second"] > 0 and detail["eta_seconds"] > 0
        params = _params(detail["progress"])
        assert "adc-station-7" in params["serving"] and "img/s" in params["serving"]
        assert "(user " in params["serving"], params

        overview = await gather(pool, None, NAMES, 120.0)
        (job,) = [j for j in overview.running if j.id == job_id]
        assert {w.name for w in job.workers} == {"gpu-3", "adc-station-7"}
        assert job.recent_rate and job.eta is not None
        text = "\n".join(str(m) for m in overview_metrics(overview))
        assert "antenna_jobs_job_worker_last_call_timestamp_seconds" in text
        assert "gpu-3" in text and "antenna_jobs_job_eta_seconds" in text

        # The rest by gpu-3: the job ends, and says nothing any more of who serves it.
        async def rest() -> bool:
            await _serve(client, job_id, slug, GPU, 10, {"hostname": "gpu-3"})
            async with pool.connection() as conn:
                return await job_store.get_status(conn, job_id) == JobState.SUCCESS

        await eventually(rest, within=120)
        final = (await client.get(f"/jobs/{job_id}/")).json()
    final_params = _params(final["progress"])
    assert not {"workers", "serving", "eta"} & set(final_params), final_params
    print(f"\njob {job_id} log:\n" + "\n".join(await _log(pool, job_id)))
    print(f"while running, process params: {params}")
    # The app flushed its tally on shutdown: every call is counted, once.
    async with pool.connection() as conn:
        counted = {w.name: w for w in (await job_workers.of_jobs(conn, [job_id]))[job_id]}
    assert counted["gpu-3"].results == IMAGES - 10
    assert counted["adc-station-7"].results == 10
    assert counted["adc-station-7"].tasks == 10
