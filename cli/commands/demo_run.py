"""What both demo modes share: the child processes, following the job, and the outcome line."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from antenna_db import results
from antenna_db.job_store import JobRecord
from antenna_db.schema import ANTENNA
from antenna_db.seed import SeedResult, seed
from cli.commands import progress_view
from cli.commands.context import console, database, job_actions
from cli.fakes.worker import FakeWorker
from cli.stack import processes
from core.job_requests import NewMlJob
from core.settings import Settings
from core.states import JobState
from core.temporal_client import connect_temporal
from storage.migrate import migrate
from storage.pool import Pool

if TYPE_CHECKING:
    from job_control.actions import JobActions


class DemoError(Exception):
    pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    peak_rss_kib: int | None = None


@dataclass
class Outcome:
    line: str
    ok: bool
    notes: list[str] = field(default_factory=list)


async def follow(
    settings: Settings,
    actions: JobActions,
    pool: Pool,
    job: JobRecord,
    children: list[Child],
    give_up_after: float,
) -> JobRecord:
    """Print the job's Web UI link and show its live bar until it is final (or cancel it)."""
    ns = settings.temporal.namespace
    console.print(
        f"job {job.id} started; Temporal Web UI: {settings.temporal.ui_url}"
        f"/namespaces/{ns}/workflows/{settings.jobs.names.workflow_id(job.id)}"
    )
    try:
        return await asyncio.wait_for(
            progress_view.watch(
                progress_view.loader(pool, job.id),
                console,
                interval=0.25,
                still_ok=lambda: check_children(children),
            ),
            give_up_after,
        )
    except TimeoutError:
        with contextlib.suppress(Exception):
            await actions.cancel(job.id, reason="demo timed out")
        raise DemoError(f"job {job.id} not final after {give_up_after:.0f} s") from None


@contextlib.asynccontextmanager
async def seeded_demo(
    settings: Settings, images: int, *, async_workers: bool = True
) -> AsyncIterator[tuple[Pool, SeedResult]]:
    """The database migrated, a new project of ``images`` demo images seeded: the pool (open
    until the block ends) and what was seeded."""
    await migrate(settings.database, ANTENNA)
    async with database(settings) as pool:
        async with pool.connection() as conn:
            seeded = await seed(conn, images, async_workers=async_workers)
        yield pool, seeded


async def run_job(
    settings: Settings, pool: Pool, new: NewMlJob, children: list[Child], give_up_after: float
) -> JobRecord:
    """Create and start the job; follow it to a final state."""
    async with job_actions(settings) as actions:
        job = await actions.create(new, start=True)
        return await follow(settings, actions, pool, job, children, give_up_after)


async def wait_answering(
    what: str,
    url: str,
    answers: Callable[[httpx.Response], bool],
    children: list[Child],
    within: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Until a GET of ``url`` ``answers`` (the server ``what`` has started); a child that
    exits meanwhile, or no answer ``within`` seconds, is a DemoError."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2, headers=headers) as http:
        while time.monotonic() < deadline:
            check_children(children)
            try:
                if answers(await http.get(url)):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)  # poll interval while the server starts
    raise DemoError(f"{what} did not answer within {within:.0f} s")


def start_children(
    children: list[Child], logs: Path, env: dict[str, str], commands: dict[str, list[str]]
) -> None:
    """Start ``antenna-jobs <args>`` for each name -> args, logging to ``logs``; add each to
    ``children`` (stopped by stop_children) as soon as it runs."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name, args in commands.items():
        log = logs / f"demo-{stamp}-{name}.log"
        proc = processes.spawn([sys.executable, "-m", "cli", *args], log, env=env, detach=False)
        children.append(Child(name, proc, log))
        console.print(f"started {name} (pid {proc.pid}, log {log})")


def check_children(children: list[Child]) -> None:
    for child in children:
        code = child.proc.poll()
        if code is not None:
            tail = processes.log_tail(child.log)
            raise DemoError(f"{child.name} exited with code {code}; log {child.log}:\n{tail}")


def stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            processes.stop(child.proc.pid, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=5)


async def outcome_of(
    pool: Pool, job: JobRecord, fakes: Sequence[FakeWorker], children: list[Child]
) -> Outcome:
    """The outcome line, with the children's peak memory and what the fake workers posted."""
    for child in children:
        child.peak_rss_kib = processes.peak_rss_kib(child.proc.pid)
    async with pool.connection() as conn:
        detections, classifications = await results.job_result_counts(conn, job.id)
    row = {"detections": detections, "classifications": classifications}
    c = progress_view.counts(job.progress)
    total = c.get("total_images", 0)
    seconds = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0.0
    rate = total / seconds if seconds > 0 else 0.0
    notes = [
        f"{child.name} peak RSS: {child.peak_rss_kib / 1024:.1f} MiB (pid {child.proc.pid})"
        for child in children
        if child.peak_rss_kib is not None
    ]
    posted = [f.totals() for f in fakes]
    posted_d = sum(p.get("detections", 0) for p in posted)
    posted_c = sum(p.get("classifications", 0) for p in posted)
    failed = c.get("failed", 0)
    if fakes:
        notes.append(
            f"fake workers posted {sum(p.get('images', 0) for p in posted)} images"
            f" ({sum(p.get('errors', 0) for p in posted)} errors, {posted_d} detections,"
            f" {posted_c} classifications, {sum(p.get('repeats', 0) for p in posted)}"
            f" repeats); job failed images: {failed}"
        )
    else:
        notes.append(f"job failed images: {failed}")
    line = (
        f"job {job.id} {job.status.value}: {total} images, {row['detections']} detections,"
        f" {row['classifications']} classifications in {seconds:.1f} s ({rate:.1f} images/s)"
    )
    return Outcome(line=line, ok=job.status == JobState.SUCCESS, notes=notes)


async def remove_from_temporal(settings: Settings) -> list[str]:
    """What the demo's worker left in Temporal, on the demo's own task queue: its reconcile
    Schedule (deleted first, so it starts nothing more) and every workflow still running there
    (terminated: no worker polls that queue any more). Returns what was removed."""
    client = await connect_temporal(settings.temporal)
    queue = settings.jobs.task_queue
    removed: list[str] = []
    schedule_id = settings.jobs.names.reconcile_schedule_id(queue)
    try:
        await client.get_schedule_handle(schedule_id).delete()
        removed.append(f"schedule {schedule_id}")
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    removed += await _terminate_running(client, queue)
    return removed


async def _terminate_running(client: Client, queue: str) -> list[str]:
    ended: list[str] = []
    query = f'TaskQueue = "{queue}" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            await handle.terminate(reason="the antenna-jobs demo that started it has ended")
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            continue  # closed meanwhile
        ended.append(f"workflow {execution.id}")
    return ended


def cleanup_temporal(settings: Settings) -> None:
    """remove_from_temporal, reported; a Temporal that does not answer is only reported."""
    try:
        removed = asyncio.run(remove_from_temporal(settings))
    except (RPCError, RuntimeError) as err:
        console.print(f"could not clean up Temporal ({err})", style="yellow")
        return
    if removed:
        console.print(f"removed from Temporal: {', '.join(removed)}", highlight=False)
