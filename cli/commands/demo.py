"""``antenna-jobs demo``: one ML job end to end on this machine, with a live progress bar.

Brings up what is missing of the stack, migrates, seeds N images, creates a token, runs the
worker and the API as subprocesses (``antenna-jobs worker`` / ``api --port <free>``) and K fake
ADC workers in-process, then creates and starts the job and follows it to a final state. It stops
everything it started (subprocesses: SIGTERM, then wait) and ends with exactly one line:
``job <id> SUCCESS: <N> images, <D> detections, <C> classifications in <T> s (<R> images/s)``.
``--mode sync`` runs the job in SYNC_API mode against a fake push-mode processing service
(``antenna-jobs fake-service``, a subprocess) instead of the API and fake workers
(cli/commands/demo_sync.py); what both share is in cli/commands/demo_run.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from enum import StrEnum
from typing import Annotated

import psycopg
import typer
from psycopg import sql

from antenna_db import users
from cli.commands.context import (
    console,
    err_console,
    fail,
    load_settings,
    user_errors,
)
from cli.commands.demo_run import (
    Child,
    DemoError,
    Outcome,
    cleanup_temporal,
    outcome_of,
    run_job,
    seeded_demo,
    start_children,
    stop_children,
    wait_answering,
)
from cli.commands.demo_sync import run_sync
from cli.fakes.worker import FakeWorker, FakeWorkerConfig, api_base
from cli.stack import local_stack, processes
from cli.stack.services import StackError
from core.settings import Settings


class DemoMode(StrEnum):
    ASYNC = "async"
    SYNC = "sync"


def demo(
    images: Annotated[int, typer.Option(min=1, help="Images in the demo collection")] = 500,
    workers: Annotated[int, typer.Option(min=1, help="Fake ADC workers")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, help="Task fetchers per fake worker")] = 4,
    api_workers: Annotated[int, typer.Option(min=1, help="API processes (`api --workers N`)")] = 1,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of failed images")] = 0.0,
    delay: Annotated[float, typer.Option(min=0, help="Fake inference seconds per batch")] = 0.0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds")] = 900,
    keep_stack: Annotated[
        bool, typer.Option("--keep-stack", help="Leave started services up (`down` stops them)")
    ] = False,
    mode: Annotated[
        DemoMode,
        typer.Option(help="async: fake ADC workers pull tasks; sync: a fake push-mode service"),
    ] = DemoMode.ASYNC,
    batch_size: Annotated[int, typer.Option(min=1, help="sync: images per /process request")] = 8,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="On empty schemas and names of its own, dropped at the end (comparable"
            " figures: each run otherwise adds its captures to the configured database)",
        ),
    ] = False,
) -> None:
    """Run one ML job end to end on the local stack and report its throughput.

    In sync mode ``--delay`` is the fake service's latency per request and ``--error-rate`` the
    share of its requests answered 500 (retried, so most batches still succeed)."""
    settings = load_settings()
    own_queue = "ANTENNA_JOBS_TASK_QUEUE" not in os.environ
    if own_queue:
        # A queue of its own: no other worker on this machine can take this demo's tasks, and
        # whatever the demo's worker leaves on it in Temporal is removed at the end.
        queue = f"antenna-jobs-demo-{uuid.uuid4().hex[:8]}"
        os.environ["ANTENNA_JOBS_TASK_QUEUE"] = queue
        settings = load_settings()
    fresh_schema = _use_fresh_schema() if fresh else None
    if fresh_schema:
        settings = load_settings()
    stack = local_stack.StackSettings()
    console.rule("antenna-jobs demo")
    try:
        reports = local_stack.up(settings, stack)
    except StackError as err:
        fail(f"local stack: {err}")
    started = {r.name for r in reports if r.action == "started"}
    for r in reports:
        console.print(f"  {r.name:<9} {r.address:<22} {r.action}")
    console.print(f"task queue {settings.jobs.task_queue}", highlight=False)
    children: list[Child] = []
    outcome: Outcome | None = None
    try:
        with user_errors():
            if mode == DemoMode.SYNC:
                sync = run_sync(
                    settings, stack, children, images, batch_size, error_rate, delay, timeout
                )
                outcome = asyncio.run(sync)
            else:
                outcome = asyncio.run(
                    _run(
                        settings,
                        stack,
                        children,
                        images,
                        workers,
                        concurrency,
                        api_workers,
                        error_rate,
                        delay,
                        timeout,
                    )
                )
    except DemoError as err:
        err_console.print(f"demo failed: {err}", style="red")
    finally:
        stop_children(children)
        if fresh_schema:
            asyncio.run(_drop_schemas(settings))
        if own_queue and ("temporal" not in started or keep_stack):
            # A Temporal server that keeps running (the demo did not start it, or keeps it):
            # leave nothing of the demo in it.
            cleanup_temporal(settings)
        if started and not keep_stack:
            local_stack.down(stack, only=started)
    if outcome is None:
        raise typer.Exit(1)
    for note in outcome.notes:
        console.print(note, highlight=False)
    typer.echo(outcome.line)
    if not outcome.ok:
        raise typer.Exit(1)


def _use_fresh_schema() -> str:
    """Point this process and its children at new schemas and names (created by the migration,
    empty): the figures of one run compare with another's, whatever the database holds."""
    name = f"demo_{uuid.uuid4().hex[:8]}"
    os.environ["ANTENNA_JOBS_DATABASE_SCHEMA"] = name
    os.environ["ANTENNA_JOBS_DATABASE_JOBS_SCHEMA"] = f"{name}_jobs"
    os.environ["ANTENNA_JOBS_NAME_PREFIX"] = f"{name}_"
    return name


async def _drop_schemas(settings: Settings) -> None:
    db = settings.database
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        for schema in (db.jobs_schema, db.schema_name):
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
    console.print(f"dropped schemas {db.schema_name}, {db.jobs_schema}", highlight=False)


async def _run(
    settings: Settings,
    stack: local_stack.StackSettings,
    children: list[Child],
    images: int,
    workers: int,
    concurrency: int,
    api_workers: int,
    error_rate: float,
    delay: float,
    give_up_after: float,
) -> Outcome:
    async with seeded_demo(settings, images) as (pool, seeded):
        async with pool.connection() as conn:
            token = await users.create_token_user(
                conn, f"demo-{seeded.pipeline_slug}", superuser=True
            )
        console.print(
            f"seeded project {seeded.project_id}, pipeline {seeded.pipeline_slug},"
            f" collection {seeded.collection_id} ({images} images)"
        )
        port = processes.free_port()
        api_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANTENNA_JOBS_API_URL": api_url}
        api = ["api", "--port", str(port), "--workers", str(api_workers)]
        start_children(
            children, stack.state_dir.resolve() / "logs", env, {"worker": ["worker"], "api": api}
        )
        await wait_answering(
            f"the API at {api_url}",
            f"{api_base(api_url)}/jobs?ids_only=1",
            lambda response: response.status_code < 500,
            children,
            within=60,
            headers={"Authorization": f"Token {token}"},
        )

        fakes = [
            FakeWorker(
                FakeWorkerConfig(
                    api_url=api_url,
                    token=token,
                    delay=delay,
                    error_rate=error_rate,
                    concurrency=concurrency,
                    pipelines=[seeded.pipeline_slug],
                    poll_interval=0.5,
                    seed=n,
                )
            )
            for n in range(workers)
        ]
        fake_tasks = [asyncio.create_task(f.run()) for f in fakes]
        try:
            new = seeded.ml_job(name=f"demo: {images} images")
            job = await run_job(settings, pool, new, children, give_up_after)
        finally:
            for f in fakes:
                f.stop()
            await asyncio.gather(*fake_tasks, return_exceptions=True)
        return await outcome_of(pool, job, fakes, children)
