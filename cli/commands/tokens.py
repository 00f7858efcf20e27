"""``antenna-jobs token create|list|revoke``: Antenna tokens for processing workers.

A token is Antenna's own (``authtoken_token``), of a user made for it: a superuser, or a member
of one project in a role (MLDataManager may fetch tasks and post results for the project's
jobs, and register pipelines). Keys are printed once, at creation.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from antenna_db import users
from antenna_db.users import Role
from cli.commands.context import console, database, fail, load_settings, run
from core.durations import parse_duration
from core.errors import InvalidJobInput

token_app = typer.Typer(help="Antenna tokens for processing workers.", no_args_is_help=True)


def _duration(value: str | None) -> timedelta | None:
    if value is None:
        return None
    parsed = parse_duration(value)
    if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
        raise typer.BadParameter(f"{value!r}: use e.g. 12h or 30d")
    return parsed


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who the token is for")] = "processing-worker",
    project: Annotated[int | None, typer.Option(help="Project the user is a member of")] = None,
    role: Annotated[Role | None, typer.Option(help="The user's role in --project")] = None,
    superuser: Annotated[bool, typer.Option(help="Every permission on every project")] = False,
    expires: Annotated[str | None, typer.Option(help="Valid for this long, e.g. 30d")] = None,
) -> None:
    """Create a user with a token and print the key (shown once)."""
    if not superuser and project is None:
        fail("give --project P --role R (e.g. MLDataManager), or --superuser")
    lifetime = _duration(expires)

    async def go() -> str:
        async with database(load_settings()) as pool, pool.connection() as conn:
            return await users.create_token_user(
                conn,
                name,
                project_id=project,
                role=role,
                superuser=superuser,
                expires_in=lifetime,
            )

    try:
        typer.echo(run(go()))
    except InvalidJobInput as err:
        fail(str(err))


@token_app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every token with its user, roles and expiry (keys shown by their first 8 characters)."""

    async def go() -> list[users.TokenRow]:
        async with database(load_settings()) as pool, pool.connection() as conn:
            return await users.list_tokens(conn)

    for row in run(go()):
        if as_json:
            typer.echo(row.model_dump_json())
            continue
        kind = "superuser" if row.is_superuser else ", ".join(row.projects) or "no role"
        state = "active" if row.is_active else "inactive"
        expires = f"expires {row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "no expiry"
        console.print(f"{row.fingerprint}…  {row.name or row.email}  {kind}  {state}  {expires}")


@token_app.command("revoke")
def revoke(
    key: Annotated[
        str, typer.Argument(help="The key, or its first 8 (or more) characters, taken literally")
    ],
) -> None:
    """Delete the one token whose key is (or starts with) KEY: Antenna's API and ours refuse it
    from then on. A prefix that several keys share revokes nothing."""

    async def go() -> int:
        async with database(load_settings()) as pool, pool.connection() as conn:
            return await users.revoke_token(conn, key)

    try:
        removed = run(go())
    except InvalidJobInput as err:
        fail(str(err))
    if not removed:
        fail(f"no token starts with {key!r}")
    console.print_json(json.dumps({"revoked": removed}))
