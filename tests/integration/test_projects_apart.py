"""Issue 17 row 1 with real processes over HTTP: two public projects share one pipeline, project
B's job starts first and has no worker, and project A's own worker (an ``antenna-jobs
fake-worker`` process holding a token scoped to A, polling like the ADC and taking the first
job listed) must still do all of A's job, against an ``antenna-jobs api`` process and an
``antenna-jobs worker`` process.

Before issue 17 the claim listing offered it B's job first (``/tasks/`` answered 403 and the
worker never reached A's job), and fair share withheld A's job for B's sake, though no worker
that may run B's job was polling.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import httpx

from antenna_db import users
from antenna_db.seed import seed
from antenna_db.users import Role
from cli.stack import processes
from core.states import FINAL_STATES, JobState
from job_control.actions import JobActions
from storage import job_runs
from tests.helpers import eventually
from tests.helpers.db import get_job, job_logs, run_counters
from tests.helpers.jobs import make_job
from tests.helpers.processes import VENV_BIN, Proc, child_env, wait_port, worker_processes

A_IMAGES = 60
B_IMAGES = 40


async def test_a_projects_own_worker_is_not_starved_by_another_projects_job(
    settings, pool, temporal_client, nats_client, tmp_path: Path
):
    slug = f"shared-{uuid.uuid4().hex[:8]}"
    async with pool.connection() as conn:
        seeded_a = await seed(conn, A_IMAGES, pipeline_slug=slug)
        seeded_b = await seed(conn, B_IMAGES, pipeline_slug=slug)
        key_a = await users.create_token_user(
            conn, "A's GPU worker", project_id=seeded_a.project_id, role=Role.ML_DATA_MANAGER
        )
    job_b = (await make_job(pool, seeded=seeded_b)).id
    job_a = (await make_job(pool, seeded=seeded_a)).id
    actions = JobActions(pool, temporal_client, settings)
    names = settings.jobs.names
    js = nats_client.jetstream()

    async def published(job_id: int, images: int) -> bool:
        async with pool.connection() as conn:
            run = await job_runs.get(conn, job_id)
        if run is None or not run.consumer:
            return False
        try:
            info = await js.consumer_info(names.stream(job_id), run.consumer)
        except Exception:
            return False
        return int(info.num_pending or 0) == images

    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    api = Proc(
        "api",
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        tmp_path / "api.log",
        child_env(settings),
    )
    fake = Proc(
        "fake-worker",
        [
            str(VENV_BIN / "antenna-jobs"), "fake-worker", "--api-url", url,
            "--pipeline", slug, "--poll-interval", "0.2", "--concurrency", "4",
            "--batch-size", "8", "--delay", "0.3",
        ],
        tmp_path / "fake-worker.log",
        child_env(settings, ANTENNA_JOBS_API_TOKEN=key_a),
    )  # fmt: skip
    with worker_processes(settings, tmp_path) as workers:
        workers.start()
        api.start()
        try:
            await wait_port(port, proc=api)
            # B's job first: its tasks wait in NATS, and no worker that may run them polls.
            await actions.run(job_b)
            await eventually(lambda: published(job_b, B_IMAGES), within=120)
            await actions.run(job_a)
            await eventually(lambda: published(job_a, A_IMAGES), within=120)

            async with httpx.AsyncClient(
                base_url=f"{url}/api/v2", headers={"Authorization": f"Token {key_a}"}
            ) as client:
                claim = await client.get(
                    "/jobs",
                    params={
                        "ids_only": 1, "incomplete_only": 1, "dispatch_mode": "async_api",
                        "pipeline__slug__in": slug, "limit": 10,
                    },
                )  # fmt: skip
                assert claim.status_code == 200, claim.text
                assert claim.json()["count"] == 1
                assert [r["id"] for r in claim.json()["results"]] == [job_a]
                refused = await client.post(f"/jobs/{job_b}/tasks/", json={"batch_size": 1})
                assert refused.status_code == 403

            fake.start()

            async def a_done() -> bool:
                assert fake.running(), fake.tail()
                return (await get_job(pool, job_a)).status in FINAL_STATES

            await eventually(a_done, within=240)
        finally:
            fake.stop()
            if api.running():
                await actions.cancel(job_b, reason="test over")

                async def b_closed() -> bool:
                    return (await get_job(pool, job_b)).status in FINAL_STATES

                await eventually(b_closed, within=60)
            api.stop()

    assert (await get_job(pool, job_a)).status == JobState.SUCCESS
    assert await run_counters(pool, job_a) == (A_IMAGES, 0)
    # Nobody here may serve B's job: it held nothing back and got nothing.
    assert await run_counters(pool, job_b) == (0, 0)
    messages = [line["message"] for line in await job_logs(pool, job_a)]
    assert not [m for m in messages if "fair share" in m], messages
    log = fake.log.read_text()
    # The status of an answer (a bare "403" also matches a log line's milliseconds, 17:05:58,403).
    assert '" 403 ' not in log and "HTTP/1.1 403" not in log, fake.tail(80)
    assert "Traceback" not in api.log.read_text(), api.tail(80)
