"""``antenna-jobs demo --mode sync``: one ML job in SYNC_API mode on this machine.

Seeds N images in a project whose async flag is off, sets the pipeline's batch size, starts the
worker and the fake push-mode processing service as subprocesses (``antenna-jobs worker`` /
``fake-service --port <free>``), registers the service for the project and pipeline, then
creates and starts the job and follows it like the async demo, ending with the same line.
"""

from __future__ import annotations

import os

from antenna_db import pipelines
from antenna_db.pipelines import BATCH_SIZE_KEY
from antenna_db.seed import add_service
from cli.commands.context import console
from cli.commands.demo_run import (
    Child,
    Outcome,
    outcome_of,
    run_job,
    seeded_demo,
    start_children,
    wait_answering,
)
from cli.stack import local_stack, processes
from core.settings import Settings
from core.states import DispatchMode


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
    async with seeded_demo(settings, images, async_workers=False) as (pool, seeded):
        async with pool.connection() as conn:
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
        await wait_answering(
            f"the fake service at {url}",
            f"{url}/readyz",
            lambda response: response.is_success,
            children,
            within=60,
        )
        async with pool.connection() as conn:
            await add_service(conn, seeded, url, "demo fake service")
        new = seeded.ml_job(
            name=f"demo (sync): {images} images", dispatch_mode=DispatchMode.SYNC_API
        )
        job = await run_job(settings, pool, new, children, give_up_after)
        return await outcome_of(pool, job, [], children)
