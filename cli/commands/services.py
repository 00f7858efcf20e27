"""``antenna-jobs service add``: register a push-mode processing service for SYNC_API jobs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from antenna_db.processing_services import add_push_service
from cli.commands.context import database, load_settings, run

service_app = typer.Typer(help="Push-mode processing services (SYNC_API).", no_args_is_help=True)


@service_app.command("add")
def add(
    name: Annotated[str, typer.Option(help="Service name (an existing one is updated)")],
    endpoint_url: Annotated[str, typer.Option(help="Base URL: /readyz and /process go below it")],
    project: Annotated[int, typer.Option(help="Project id the service serves")],
    pipeline: Annotated[list[str], typer.Option(help="Pipeline slug it serves (repeatable)")],
) -> None:
    """Register (or update) a push-mode service for a project's pipelines; prints its id."""

    async def go() -> int:
        async with database(load_settings()) as pool, pool.connection() as conn:
            return await add_push_service(
                conn,
                name=name,
                endpoint_url=endpoint_url,
                project_id=project,
                pipeline_slugs=pipeline,
            )

    typer.echo(json.dumps({"id": run(go()), "name": name}))
