"""``antenna-jobs demo --mode sync``: one ML job in SYNC_API mode on this machine.

Seeds N images in a project whose async flag is off, sets the pipeline's batch size, starts the
worker and the fake push-mode processing service as subprocesses (``antenna-jobs worker`` /
``fake-service --port <free>``), registers the service for the project and pipeline, then
creates and starts the job and follows it like the async demo, ending with the same line.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx

from antenna_db import pipelines
from antenna_db.pipelines import BATCH_SIZE_KEY
from antenna_db.processing_services import add_push_service
from antenna_db.schema import ANTENNA
from antenna_db.seed import seed
from cli.commands.context import console, database, job_actions
from cli.commands.demo_run import (
    Child,
    DemoError,
    Outcome,
    check_children,
    follow,
    outcome_of,
    start_children,
)
from cli.stack import local_stack, processes
from core.job_requests import NewMlJob
from core.settings import Settings
from core.states import DispatchMode
from storage.migrate import migrate


async def run_sync(
    settings: Settings,
    stack: local_stack.StackSettings,
    children: list[Child],
    images: int,
    batch_size: int,
    error_rate: float,
    latency: float,
    give_up_after: float,
) -> Outcome:
    await migrate(settings.database, ANTENNA)
    async with database(settings) as pool:
        async with pool.connection() as conn:
            seeded = await seed(conn, images, async_workers=False)
            await pipelines.set_default_config(
                conn, seeded.pipeline_slug, BATCH_SIZE_KEY, batch_size
            )
        console.print(
            f"seeded project {seeded.project_id}, pipeline {seeded.pipeline_slug},"
            f" collection {seeded.collection_id} ({images} images, {batch_size} per request)"
        )
        port = processes.free_port()
        url = f"http://127.0.0.1:{port}"
        logs = stack.state_dir.resolve() / "logs"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        service = ["fake-service", "--port", str(port), "--pipeline", seeded.pipeline_slug]
        service += ["--latency", str(latency), "--error-rate", str(error_rate)]
        start_children(children, logs, env, {"worker": ["worker"], "fake-service": service})
        await _wait_ready(url, children, within=60)
        async with pool.connection() as conn:
            await add_push_service(
                conn,
                name=f"demo fake service {seeded.pipeline_slug}",
                endpoint_url=url,
                project_id=seeded.project_id,
                pipeline_slugs=[seeded.pipeline_slug],
            )
        async with job_actions(settings) as actions:
            new = NewMlJob(
                project_id=seeded.project_id,
                pipeline_slug=seeded.pipeline_slug,
                collection_id=seeded.collection_id,
                name=f"demo (sync): {images} images",
                dispatch_mode=DispatchMode.SYNC_API,
            )
            job = await actions.create(new, start=True)
            job = await follow(settings, actions, pool, job, children, give_up_after)
        for child in children:
            child.peak_rss_kib = processes.peak_rss_kib(child.proc.pid)
        return await outcome_of(pool, job, [], children)


async def _wait_ready(url: str, children: list[Child], within: float) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            check_children(children)
            try:
                if (await http.get(f"{url}/readyz")).is_success:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)  # poll interval while the server starts
    raise DemoError(f"the fake service at {url} did not answer within {within:.0f} s")
