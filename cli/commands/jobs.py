"""``antenna-jobs job ...``: create, run, cancel, retry, pause, resume, status and watch jobs.

Actions go through job_control.actions.JobActions (Postgres + Temporal) directly, not over HTTP.
Reads (status, watch) need only Postgres, so they work while Temporal is down.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from antenna_db import job_store
from antenna_db.job_store import JobRecord
from cli.commands import progress_view
from cli.commands.context import console, database, fail, job_actions, load_settings, run
from core.job_params import ExportFormat, SampleMethod
from core.job_requests import NewInternalJob, NewMlJob
from core.states import DispatchMode, JobState, JobType
from core.wire_types import INT4_MAX

job_app = typer.Typer(help="Create and control processing jobs.", no_args_is_help=True)

JobId = Annotated[int, typer.Argument(help="Job id")]


def _print_job(job: JobRecord) -> None:
    typer.echo(json.dumps({"id": job.id, "status": job.status.value}))


@job_app.command("create")
def create(
    project: Annotated[int, typer.Option(help="Project id")],
    pipeline: Annotated[str | None, typer.Option(help="Pipeline slug (ML jobs)")] = None,
    collection: Annotated[
        int | None,
        typer.Option(
            help="Collection id (ML: its images; populate: the one to fill; export: scope)"
        ),
    ] = None,
    job_type: Annotated[JobType, typer.Option("--type", help="Job type")] = JobType.ML,
    dispatch_mode: Annotated[
        DispatchMode | None, typer.Option(help="ML: default is the project's choice")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, max=INT4_MAX, help="ML: at most this many images")
    ] = None,
    shuffle: Annotated[bool, typer.Option(help="ML: shuffle the images before the limit")] = True,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="data_export: file format")
    ] = ExportFormat.CSV,
    method: Annotated[
        SampleMethod | None, typer.Option(help="populate_captures_collection: how to sample")
    ] = None,
    size: Annotated[int | None, typer.Option(help="populate random: captures to pick")] = None,
    every: Annotated[int | None, typer.Option(help="populate every_nth: keep 1 in N")] = None,
    seed: Annotated[int | None, typer.Option(help="populate random: seed of the sample")] = None,
    date_start: Annotated[str | None, typer.Option(help="populate window: YYYY-MM-DD")] = None,
    date_end: Annotated[str | None, typer.Option(help="populate window: YYYY-MM-DD")] = None,
    hour_start: Annotated[int | None, typer.Option(help="populate window: hour (UTC)")] = None,
    hour_end: Annotated[int | None, typer.Option(help="populate window: hour (UTC)")] = None,
    name: Annotated[str | None, typer.Option(help="Job name")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start it right away")] = False,
) -> None:
    """Create a job (ML, populate_captures_collection or data_export); prints {"id", "status"}."""
    if job_type == JobType.ML and (pipeline is None or collection is None):
        fail("an ML job needs --pipeline and --collection")
    params: dict[str, object] = {}
    if job_type == JobType.DATA_EXPORT:
        params = {"format": export_format.value}
    elif job_type == JobType.POPULATE_CAPTURES_COLLECTION:
        given = {
            "method": method.value if method else None,
            "size": size,
            "every": every,
            "seed": seed,
            "date_start": date_start,
            "date_end": date_end,
            "hour_start": hour_start,
            "hour_end": hour_end,
        }
        params = {key: value for key, value in given.items() if value is not None}

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            if job_type != JobType.ML:
                internal = NewInternalJob(
                    job_type=job_type,
                    project_id=project,
                    collection_id=collection,
                    params=params,
                    name=name,
                )
                return await actions.create_internal(internal, start=start)
            assert pipeline is not None and collection is not None
            new = NewMlJob(
                project_id=project,
                pipeline_slug=pipeline,
                collection_id=collection,
                name=name,
                dispatch_mode=dispatch_mode,
                limit=limit,
                shuffle=shuffle,
            )
            return await actions.create(new, start=start)

    _print_job(run(go()))


@job_app.command("run")
def run_job(job_id: JobId) -> None:
    """Start the job's workflow (a running job keeps its one run)."""

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            return await actions.run(job_id)

    _print_job(run(go()))


@job_app.command("cancel")
def cancel(
    job_id: JobId,
    reason: Annotated[str, typer.Option(help="Recorded in the job log")] = "cancelled from CLI",
) -> None:
    """CANCELING at once; the workflow stops its work, cleans up and ends REVOKED."""

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            return await actions.cancel(job_id, reason=reason)

    _print_job(run(go()))


@job_app.command("retry")
def retry(
    job_id: JobId,
    failed_only: Annotated[
        bool, typer.Option("--failed-only", help="Queue only the images the last run failed")
    ] = False,
) -> None:
    """Run a FAILURE or REVOKED job again, under the same workflow id."""

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            return await actions.retry(job_id, failed_only=failed_only)

    _print_job(run(go()))


@job_app.command("pause")
def pause(
    job_id: JobId,
    reason: Annotated[str, typer.Option(help="Recorded in the job log")] = "paused from CLI",
) -> None:
    """No more tasks for a running async job until resumed; results in flight are still saved."""

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            return await actions.pause(job_id, reason=reason)

    _print_job(run(go()))


@job_app.command("resume")
def resume(
    job_id: JobId,
    reason: Annotated[str, typer.Option(help="Recorded in the job log")] = "resumed from CLI",
) -> None:
    """Hand out a paused job's tasks again, where it stopped."""

    async def go() -> JobRecord:
        async with job_actions(load_settings()) as actions:
            return await actions.resume(job_id, reason=reason)

    _print_job(run(go()))


@job_app.command("status")
def status(
    job_id: JobId,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    logs: Annotated[int, typer.Option(min=0, help="Latest log lines to show")] = 10,
) -> None:
    """Status, stage progress and the latest log lines of a job."""
    settings = load_settings()

    async def go() -> tuple[JobRecord, list[dict[str, object]]]:
        async with database(settings) as pool, pool.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            return job, await job_store.latest_logs(conn, job_id, logs)

    job, lines = run(go())
    if as_json:
        typer.echo(json.dumps(progress_view.status_json(job, lines)))
    else:
        console.print(progress_view.status_panel(job, lines))


@job_app.command("watch")
def watch(
    job_id: JobId,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between reads")] = 0.5,
) -> None:
    """A live progress bar until the job is final; exit 0 only if it ends SUCCESS."""
    settings = load_settings()

    async def go() -> JobRecord:
        async with database(settings) as pool:
            return await progress_view.watch(
                progress_view.loader(pool, job_id), console, interval=interval
            )

    job = run(go())
    console.print(f"job {job.id} {job.status.value}")
    if job.status != JobState.SUCCESS:
        raise typer.Exit(1)
