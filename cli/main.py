"""``antenna-jobs``: the operator's command line (typer + rich).

Commands that need the worker or the API import them when they run, so the rest of the CLI works
without them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from antenna_db import schema_check, schema_manifest
from antenna_db.schema import ANTENNA
from antenna_db.seed import seed as seed_data
from cli.commands.context import (
    console,
    database,
    err_console,
    fail,
    load_settings,
    run,
    user_errors,
)
from cli.commands.dead_letters import dead_letter_app
from cli.commands.demo import demo
from cli.commands.fake_service import fake_service
from cli.commands.fake_worker import fake_worker
from cli.commands.health import health
from cli.commands.jobs import job_app
from cli.commands.replay import replay
from cli.commands.services import service_app
from cli.commands.status import status
from cli.commands.tokens import token_app
from cli.stack import local_stack
from cli.stack.services import StackError
from storage.migrate import migrate

app = typer.Typer(
    name="antenna-jobs",
    help="Antenna's ML processing jobs as durable Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(job_app, name="job")
app.add_typer(service_app, name="service")
app.add_typer(dead_letter_app, name="dead-letters")
app.command("fake-worker")(fake_worker)
app.command("fake-service")(fake_service)
app.command("demo")(demo)
app.command("status")(status)
app.command("replay")(replay)
app.command("health")(health)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the migrations not yet applied (safe to run concurrently), then check Antenna's
    tables against the schema manifest: exit 1 naming each difference that matters."""
    settings = load_settings()
    db = settings.database

    async def go() -> list[str]:
        applied = await migrate(db, ANTENNA)
        await schema_check.require_compatible(db.url, db.schema_name)
        return applied

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    applied = run(go())
    console.print_json(json.dumps({"schema": db.schema_name, "applied": applied}))


@db_app.command("check")
def db_check() -> None:
    """Check Antenna's tables against the schema manifest (what the worker, API and bridge do at
    start); print the differences, exit 1 if any matters."""
    settings = load_settings()
    db = settings.database

    async def go() -> schema_check.SchemaReport:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            return await schema_check.check(conn, db.schema_name)

    report = run(go())
    console.print_json(
        json.dumps(
            {
                "schema": db.schema_name,
                "problems": report.problems,
                "accepted": report.notes,
                "other_tables": report.other_tables,
            }
        )
    )
    if not report.ok:
        raise typer.Exit(1)


@db_app.command("manifest")
def db_manifest(
    schema_sql: Annotated[
        Path, typer.Option(help="Antenna's schema dump (../shared/antenna/schema.sql's copy)")
    ] = Path("tests/fixtures/antenna/schema.sql"),
    out: Annotated[
        Path | None,
        typer.Option(help="Write here (antenna_db/schema_manifest.json); default stdout"),
    ] = None,
) -> None:
    """Generate the schema manifest from Antenna's schema dump (needs a PostgreSQL: the dump is
    loaded into a scratch schema, read back from the catalogs and dropped)."""
    settings = load_settings()
    with user_errors():
        text = schema_manifest.generate(settings.database.url, schema_sql)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


@app.command()
def up() -> None:
    """Start whatever of Temporal, PostgreSQL, Redis and NATS does not answer (embedded)."""
    settings = load_settings()
    try:
        reports = local_stack.up(settings)
    except StackError as err:
        fail(str(err))
    for r in reports:
        where = f"pid {r.pid}, log {r.log}" if r.pid else "already running, left alone"
        console.print(f"[bold]{r.name:<9}[/] {r.address:<22} {r.action:<8} ({where})")
    console.print(f"Temporal Web UI: {settings.temporal.ui_url}")


@app.command()
def down() -> None:
    """Stop the services `up` started (never one it did not start)."""
    reports = local_stack.down()
    if not reports:
        console.print("nothing to stop: `up` started no service")
    for r in reports:
        console.print(f"[bold]{r.name:<9}[/] {r.address:<22} {r.action} (pid {r.pid})")


@app.command()
def worker() -> None:
    """Run the Temporal workers (workflows and activities) until SIGINT/SIGTERM."""
    from worker.main import run_worker
    from worker.settings_guard import SettingsConflict

    try:
        run(run_worker(load_settings()))
    except SettingsConflict as err:
        fail(str(err))


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="Port (default: settings.api.port)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes sharing the port (default: settings.api.workers)"),
    ] = None,
) -> None:
    """Serve the HTTP API (job actions and the worker-facing endpoints)."""
    from api.server import serve

    settings = load_settings()
    serve(settings, port or settings.api.port, workers=workers or settings.api.workers)


@app.command()
def bridge() -> None:
    """Start the workflows of Antenna's run_job messages (its Run/Retry buttons) until
    SIGINT/SIGTERM; needs ANTENNA_JOBS_ANTENNA_BROKER_URL."""
    from bridge.main import run_bridge

    settings = load_settings()
    with user_errors():
        settings.antenna.require_broker_url()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run(run_bridge(settings))
    except ConnectionError as err:
        fail(f"{err}; is it running? try `antenna-jobs up`")


@app.command()
def seed(
    images: Annotated[int, typer.Option(min=0, help="Images in the new collection")] = 100,
) -> None:
    """Create a demo project, fake pipeline and a collection of N images; print their ids."""
    settings = load_settings()

    async def go() -> str:
        await migrate(settings.database, ANTENNA)
        async with database(settings) as pool, pool.connection() as conn:
            return (await seed_data(conn, images)).model_dump_json()

    typer.echo(run(go()))


def _uses_temporal() -> bool:
    return any(name.startswith("temporalio.bridge") for name in sys.modules)


def main() -> None:
    """Console-script entry point.

    The Temporal SDK's native runtime can abort the interpreter at exit (sdk-python #300) after
    all work is done; every command has shut its clients and workers down by the time it
    returns, so a process that loaded the runtime flushes and leaves with ``os._exit``.
    """
    code: int
    try:
        app()
        code = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            err_console.print(str(exit_.code))
            code = 1
    except KeyboardInterrupt:
        code = 130
    if not _uses_temporal():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
