"""``antenna-jobs replay``: before a deploy, check the installed code against the runs open in
the configured Temporal (job_control/replay.py); exits 1 naming each run that would break."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError

from cli.commands.context import console, err_console, fail, load_settings, run
from core.durations import Duration
from core.temporal_client import connect_options, connect_temporal


def replay(
    since: Annotated[
        str | None,
        typer.Option(help="Also the runs closed this recently, e.g. 2h or 7d"),
    ] = None,
) -> None:
    """Replay the history of every open run (and, with --since, recently closed ones) on the
    workflow code installed here; exit 1 naming each run that would fail after a deploy."""
    from job_control.replay import replay_runs
    from workflows.registry import WORKFLOWS

    settings = load_settings()
    try:
        window: timedelta | None = TypeAdapter(Duration).validate_python(since) if since else None
    except ValidationError:
        fail(f"--since {since!r} is not a duration (e.g. 30m, 2h, 7d)")

    async def go() -> int:
        try:
            client = await connect_temporal(settings.temporal)
        except RuntimeError as err:
            where = connect_options(settings.temporal).describe()
            fail(f"cannot reach Temporal at {where} ({err})")
        report = await replay_runs(client, WORKFLOWS, window)
        for failed in report.failures:
            err_console.print(
                f"[bold red]would break[/] {failed.workflow_id} (run {failed.run_id}):"
                f" {failed.error}"
            )
        verdict = "OK" if not report.failures else f"{len(report.failures)} would break"
        console.print(f"replayed {report.checked} runs on the installed code: {verdict}")
        return 1 if report.failures else 0

    raise typer.Exit(run(go()))
