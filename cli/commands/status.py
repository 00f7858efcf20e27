"""``antenna-jobs status``: one screen of the whole system, like Flower's front page.

Running jobs with their progress, throughput and ETA, the NATS queue of each (queued, in flight,
redelivered) and its unsaved results; the workers seen (the last task poll of each pipeline);
the result inbox, the jobs by status, and the bridge (Antenna's broker: connected, the jobs queue's
depth and consumers, messages dead-lettered). The figures are job_control/overview.py's, the same as
``/metrics``. ``--watch`` redraws it every ``--interval`` seconds until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

import nats
import nats.errors
import typer
from nats.aio.client import Client as NatsClient
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cli.commands.context import console, database, load_settings, run
from core.settings import Settings
from core.states import JobState
from job_control.overview import Overview, RunningJob, gather

_ORDER = [s.value for s in JobState]


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def _queue(job: RunningJob) -> tuple[str, str, str]:
    if job.queue is None:
        return "-", "-", "-"
    q = job.queue
    return str(q.queued), str(q.in_flight), str(q.redelivered)


def _jobs_table(overview: Overview) -> Table:
    table = Table(title="Running jobs", title_justify="left", expand=False)
    for column, justify in (
        ("job", "right"),
        ("name", "left"),
        ("project", "right"),
        ("pipeline", "left"),
        ("status", "left"),
        ("done/total", "right"),
        ("failed", "right"),
        ("images/s", "right"),
        ("ETA", "right"),
        ("queued", "right"),
        ("in flight", "right"),
        ("redelivered", "right"),
        ("inbox", "right"),
        ("note", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for job in overview.running:
        share = f" ({job.done / job.total:.0%})" if job.total else ""
        note = Text("waiting for workers", style="yellow") if job.waiting_for_workers else Text("")
        if job.schema_error:
            age = _ago(job.schema_error_age) if job.schema_error_age is not None else "-"
            note = Text(f"saves wait for Antenna's schema ({age}): {job.schema_error}", style="red")
        table.add_row(
            str(job.id),
            job.name,
            str(job.project_id),
            job.pipeline_slug or "-",
            job.status.value,
            f"{job.done}/{job.total}{share}",
            str(job.failed),
            f"{job.rate if job.recent_rate is None else job.recent_rate:.1f}",
            _ago(job.eta) if job.eta is not None else "-",
            *_queue(job),
            str(job.inbox),
            note,
        )
    return table


def _workers_table(overview: Overview) -> Table:
    table = Table(title="Workers seen (last task poll per pipeline)", title_justify="left")
    for column in ("pipeline", "last poll", "ago", "running jobs"):
        table.add_column(column)
    running: dict[int | None, int] = {}
    for job in overview.running:
        running[job.pipeline_id] = running.get(job.pipeline_id, 0) + 1
    for poll in overview.polls:
        table.add_row(
            poll.slug or f"id {poll.pipeline_id}",
            f"{poll.polled_at:%Y-%m-%d %H:%M:%S %Z}",
            _ago(poll.age),
            str(running.get(poll.pipeline_id, 0)),
        )
    return table


def _bridge_lines(overview: Overview) -> list[Text | str]:
    lines: list[Text | str] = []
    for b in overview.bridges:
        if b.stale:
            state = Text(f"no report for {_ago(b.age)} (not running?)", style="red")
        elif b.connected:
            state = Text("connected", style="green")
        else:
            state = Text(f"disconnected ({b.error or 'unknown'})", style="red")
        figures = (
            f", queue depth {b.queue_depth}, consumers {b.consumers}"
            if b.queue_depth is not None
            else ""
        )
        foreign = (
            Text(f", {b.foreign_consumers} other consumer(s) take Runs!", style="bold red")
            if b.foreign_consumers
            else Text("")
        )
        dead = b.dead_lettered or 0
        dead_text = Text(
            f", dead-lettered {dead}" + (" (antenna-jobs dead-letters list)" if dead else ""),
            style="yellow" if dead else "",
        )
        lines.append(
            Text.assemble(f"\nbridge on queue {b.queue!r}: ", state, figures, foreign, dead_text)
        )
    return lines


def _job_workers_table(overview: Overview, window: float) -> Table:
    table = Table(title="Workers serving running jobs", title_justify="left")
    for column in ("job", "worker", "user", "user agent", "last call", "images/s", "results"):
        table.add_column(column)
    for job in overview.running:
        for worker in job.workers:
            serving = worker.idle <= window
            table.add_row(
                str(job.id),
                Text(worker.name, style="" if serving else "dim"),
                worker.user_email or str(worker.user_id),
                worker.user_agent or "-",
                f"{_ago(worker.idle)} ago" + ("" if serving else " (idle)"),
                f"{worker.throughput:.1f}",
                str(worker.results),
            )
    return table


def render(overview: Overview, window: float = 120.0) -> RenderableType:
    counts = sorted(
        overview.jobs_by_status.items(),
        # A status Antenna adds later is shown as it is, after ours.
        key=lambda kv: (_ORDER.index(kv[0]) if kv[0] in _ORDER else len(_ORDER), kv[0]),
    )
    by_status = "  ".join(f"{status} {n}" for status, n in counts) or "none"
    oldest = overview.inbox_oldest_age
    inbox = f"result inbox: {overview.inbox_depth} rows" + (
        f", oldest {_ago(oldest)}" if oldest is not None else ""
    )
    rate = sum(j.rate for j in overview.running)
    head = Text.assemble(
        ("antenna-jobs status", "bold"),
        f"  {overview.taken_at:%Y-%m-%d %H:%M:%S %Z}\n",
        f"jobs by status: {by_status}\n",
        f"{inbox}\n",
        f"running: {len(overview.running)} jobs, {rate:.1f} images/s together",
        *_bridge_lines(overview),
    )
    blocked = [j for j in overview.running if j.schema_error is not None]
    if blocked:
        head.append(
            f"\nsaves waiting for Antenna's schema: {len(blocked)} jobs"
            f" ({', '.join(str(j.id) for j in blocked[:10])}): results kept in the inbox,"
            " retried with backoff; `antenna-jobs db check` names the differences",
            style="red",
        )
    return Group(
        head,
        _jobs_table(overview),
        _job_workers_table(overview, window),
        _workers_table(overview),
    )


@contextlib.asynccontextmanager
async def _nats(settings: Settings) -> AsyncIterator[NatsClient | None]:
    """NATS for the queue figures; without it the screen shows everything else."""
    try:
        nc = await nats.connect(
            settings.nats.url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
        )
    except (nats.errors.Error, OSError, TimeoutError):
        yield None
        return
    try:
        yield nc
    finally:
        await nc.close()


def status(
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="--watch: seconds between")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="The overview as JSON")] = False,
) -> None:
    """Running jobs with throughput and ETA, workers seen, the result inbox: one screen."""
    settings = load_settings()
    window = settings.jobs.workers_seen_window.total_seconds()

    async def go() -> None:
        async with database(settings) as pool, _nats(settings) as nc:
            js = nc.jetstream() if nc is not None else None

            async def take() -> Overview:
                return await gather(pool, js, settings.jobs.names, window)

            if as_json:
                typer.echo(json.dumps((await take()).model_dump(mode="json")))
                return
            if not watch:
                console.print(render(await take(), window))
                return
            with Live(render(await take(), window), console=console, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(render(await take(), window), refresh=True)

    with contextlib.suppress(KeyboardInterrupt):
        run(go())
