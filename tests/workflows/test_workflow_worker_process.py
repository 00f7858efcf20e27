"""The worker entry point: run_worker in-process serves a job; as a process it exposes
Prometheus metrics and exits 0 on SIGTERM (workers shut down explicitly, sdk-python #300)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import httpx

from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.jobs import make_job
from tests.helpers.processes import child_process, sigterm_exit_code
from tests.helpers.temporal import SimulatedAdcWorker, job_handle, simulated_worker
from worker.main import run_worker

_SCRIPT = """
import asyncio
from core.settings import Settings
from worker.main import run_worker

async def main():
    ready = asyncio.Event()
    task = asyncio.create_task(run_worker(Settings(), ready=ready))
    await ready.wait()
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_worker_in_process_runs_a_job(pool, temporal_client, settings, nats_client):
    ready = asyncio.Event()
    worker_task = asyncio.create_task(run_worker(settings, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    job, seeded, _ = await make_job(pool, images=25)
    try:
        async with simulated_worker(
            SimulatedAdcWorker(nats_client, pool, job.id, seeded.pipeline_slug)
        ):
            await JobActions(pool, temporal_client, settings).run(job.id)
            result = await job_handle(temporal_client, job.id).result()
        assert result.status == JobState.SUCCESS and result.processed == 25
    finally:
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
    assert worker_task.done()


async def test_worker_process_serves_metrics_and_exits_zero_on_sigterm(settings):
    port = free_port()
    env = os.environ | {
        "ANTENNA_JOBS_DATABASE_SCHEMA": settings.database.schema_name,
        "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": settings.database.jobs_schema,
        "ANTENNA_JOBS_TEMPORAL_ADDRESS": settings.temporal.address,
        "ANTENNA_JOBS_TASK_QUEUE": settings.jobs.task_queue,
        "ANTENNA_JOBS_WORKER_METRICS_BIND": f"127.0.0.1:{port}",
    }
    worker = child_process(sys.executable, "-c", _SCRIPT, env=env, stdout=asyncio.subprocess.PIPE)
    async with worker as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready"

        async def metrics() -> str:
            async with httpx.AsyncClient() as http:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/metrics")
                except httpx.TransportError:
                    return ""
            return response.text if "temporal_" in response.text else ""

        assert "temporal_" in await eventually(metrics, within=30)
        assert await sigterm_exit_code(proc, 60) == 0
