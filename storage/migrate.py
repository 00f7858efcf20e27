"""The versioned migrations that shape the database: our own tables (storage/migrations) in
``jobs_schema``, beside the host application's tables (Antenna's), which are used where they are
on its own database and built in its exact shape on a bare one.

A migration package holds numbered SQL files (``0001_name.sql``), run in order, each in one
transaction, and recorded in ``schema_migrations`` under the package's scope. The runner knows
no other application's tables by name: the caller hands it them (``HostTables``; Antenna's are
antenna_db.schema.ANTENNA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from core.settings import DatabaseSettings
from storage import migrations as jobs_migrations

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x616E7465


class MigrationError(RuntimeError):
    """The database cannot be brought to the shape antenna-jobs needs (said why)."""


@dataclass(frozen=True)
class HostTables:
    """The tables of the application ours sit beside, as the runner needs to know them."""

    # The application, as an error message names it.
    name: str
    # Their migrations' scope in schema_migrations.
    scope: str
    # The migrations that build them on a bare database.
    package: ModuleType
    # A table that marks the host's own database (present and not built by us: only checked).
    marker: str
    # Tables the host's own database must have.
    required: tuple[str, ...]


def migrations(package: ModuleType) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in ``package``, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def _apply(
    conn: psycopg.AsyncConnection[Any],
    scope: str,
    package: ModuleType,
    schema: str,
    jobs_schema: str,
) -> list[str]:
    """Run ``package``'s migrations not yet recorded under ``scope``, each in ``schema``."""
    record = sql.SQL(
        "INSERT INTO {}.schema_migrations (scope, version, name) VALUES (%s, %s, %s)"
    ).format(sql.Identifier(jobs_schema))
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations WHERE scope = %s").format(
            sql.Identifier(jobs_schema)
        ),
        (scope,),
    )
    done = {row[0] for row in await cur.fetchall()}
    applied = []
    for version, name, text in migrations(package):
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema))
            )
            await conn.execute(text.encode())
            await conn.execute(record, (scope, version, name))
        applied.append(f"{scope}:{name}")
    return applied


async def _tables(conn: psycopg.AsyncConnection[Any], schema: str) -> set[str]:
    cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {row[0] for row in await cur.fetchall()}


async def migrate(settings: DatabaseSettings, host: HostTables) -> list[str]:
    """Bring the database to the shape antenna-jobs needs; returns what was applied.

    Our own tables go in ``jobs_schema``. The host's tables are used where they are: on its own
    database (``host.marker`` present, not created by us) nothing of them is touched, only
    checked; on a bare database they are created in ``schema_name`` by ``host.package``'s
    migrations. Safe to run concurrently.
    """
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(settings.url, autocommit=True) as conn:
        jobs = sql.Identifier(settings.jobs_schema)
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(jobs))
            await conn.execute(sql.SQL("SET search_path TO {}").format(jobs))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " scope text NOT NULL, version integer NOT NULL, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, version))"
            )
            cur = await conn.execute(
                "SELECT count(*) FROM schema_migrations WHERE scope = %s", (host.scope,)
            )
            row = await cur.fetchone()
            ours = bool(row and row[0])
            tables = await _tables(conn, settings.schema_name)
            if ours or host.marker not in tables:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(settings.schema_name)
                    )
                )
                applied += await _apply(
                    conn, host.scope, host.package, settings.schema_name, settings.jobs_schema
                )
            else:
                missing = [t for t in host.required if t not in tables]
                if missing:
                    raise MigrationError(
                        f"schema {settings.schema_name!r} has {host.marker} but lacks"
                        f" {host.name}'s {', '.join(missing)}: is it an {host.name} database?"
                    )
            applied += await _apply(
                conn, "jobs", jobs_migrations, settings.jobs_schema, settings.jobs_schema
            )
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
