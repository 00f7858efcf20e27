"""How a job looks in the terminal: a status panel (stages, latest logs) and a live progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from antenna_db import job_store
from antenna_db.job_store import JobRecord
from core.progress import JobProgress, ParamValue
from core.states import FINAL_STATES, JobState

_STATE_STYLE = {
    JobState.SUCCESS: "green",
    JobState.FAILURE: "red",
    JobState.REVOKED: "yellow",
    JobState.CANCELING: "yellow",
}


def _count(value: ParamValue) -> int:
    return int(value) if isinstance(value, int | float) else 0


def counts(progress: JobProgress) -> dict[str, int]:
    """The numbers an operator watches, 0 where a stage has not written them yet."""
    out: dict[str, int] = {}
    for stage_key, keys in (
        ("collect", ("total_images",)),
        ("process", ("processed", "failed", "remaining")),
        ("results", ("detections", "classifications")),
    ):
        try:
            stage = progress.stage(stage_key)
        except KeyError:
            continue
        for key in keys:
            out[key] = _count(stage.param(key))
    return out


def status_panel(job: JobRecord, logs: list[dict[str, Any]]) -> RenderableType:
    style = _STATE_STYLE.get(job.status, "cyan")
    head = Text.assemble(
        (f"job {job.id} ", "bold"),
        (job.status.value, f"bold {style}"),
        (" PAUSED" if job.progress.paused else "", "bold yellow"),
        f"  {job.progress.summary.progress:.0%}  {job.name}  ({job.dispatch_mode.value})",
    )
    stages = Table(box=None, pad_edge=False)
    for column in ("stage", "status", "progress", "params"):
        stages.add_column(column)
    for stage in job.progress.stages:
        params = "  ".join(f"{p.key}={p.value}" for p in stage.params if p.value != "")
        stages.add_row(stage.name or stage.key, stage.status.value, f"{stage.progress:.0%}", params)
    lines = [
        Text(f"{row['created_at']:%H:%M:%S} {row['level']:<7} {row['message']}")
        for row in reversed(logs)
    ]
    errors = [Text(f"error: {e}", style="red") for e in job.progress.errors[-5:]]
    if job.result and "path" in job.result:
        errors.insert(0, Text(f"file: {job.result['path']} ({job.result.get('size')} bytes)"))
    return Group(head, stages, *errors, Text("latest logs:", style="bold") if lines else "", *lines)


def status_json(job: JobRecord, logs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status.value,
        "paused": job.progress.paused,
        "job_type": job.job_type.value,
        "dispatch_mode": job.dispatch_mode.value,
        "progress": job.progress.as_json(),
        "result": job.result,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "logs": [
            {
                "created_at": row["created_at"].isoformat(),
                "level": row["level"],
                "message": row["message"],
            }
            for row in logs
        ],
    }


def _describe(job: JobRecord) -> str:
    c = counts(job.progress)
    return (
        f"job {job.id} {job.status.value:<9} {c.get('processed', 0)}/{c.get('total_images', 0)}"
        f" images, {c.get('failed', 0)} failed, {c.get('detections', 0)} detections"
    )


async def watch(
    load: Callable[[], Awaitable[JobRecord]],
    console: Console,
    *,
    interval: float = 0.5,
    still_ok: Callable[[], None] | None = None,
) -> JobRecord:
    """Show a live bar from the job's progress until the job reaches a final state.

    ``still_ok`` runs on every tick and may raise to give up (e.g. a process the caller
    depends on has died).
    """
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        job = await load()
        task = bar.add_task(_describe(job), total=1.0)
        while True:
            bar.update(task, completed=job.progress.summary.progress, description=_describe(job))
            if job.status in FINAL_STATES:
                return job
            if still_ok is not None:
                still_ok()
            await asyncio.sleep(interval)
            job = await load()


def loader(pool: Any, job_id: int) -> Callable[[], Awaitable[JobRecord]]:
    async def load() -> JobRecord:
        async with pool.connection() as conn:
            return await job_store.get_job(conn, job_id)

    return load
