"""Antenna's schema, checked (issue 17 item 3; row 10 of its table).

The committed manifest is what the generator makes of Antenna's schema dump in
tests/fixtures/antenna/; a database made by Antenna's migrations and one made by ``db migrate``
on a bare database (standalone) both pass the check; each kind of change is sorted into a
difference that matters (``db migrate``, the worker, the API and the bridge refuse to start,
naming it) or one that cannot matter (accepted, logged). Each test alters an Antenna schema of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from antenna_db import schema_check, schema_manifest
from antenna_db.schema_check import SchemaIncompatible
from api.app import open_resources
from bridge.main import run_bridge
from core.metrics import SCHEMA_PROBLEMS
from core.settings import AntennaSettings, DatabaseSettings, Settings
from tests.helpers import eventually
from tests.helpers.antenna import FIXTURES, antenna_schema
from tests.helpers.broker import BROKER_URL
from tests.helpers.settings import with_settings
from worker.resources import Resources
from worker.schema_watch import SchemaWatch

ROOT = Path(__file__).parent.parent.parent


@pytest_asyncio.fixture
async def antenna_db(session_settings: Settings) -> AsyncIterator[DatabaseSettings]:
    """A database made by Antenna's migrations (schema.sql), in schemas of this test's own,
    migrated by ``db migrate`` (which checked it)."""
    async with antenna_schema(session_settings.database, "aj_s17", offset_ids=False) as db:
        yield db


def antennas_tables() -> list[str]:
    return re.findall(r"^CREATE TABLE (\w+)", (FIXTURES / "schema.sql").read_text(), re.M)


async def alter(db: DatabaseSettings, *statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        await conn.execute(f"SET search_path TO {db.schema_name}")
        for statement in statements:
            await conn.execute(statement)


async def report(db: DatabaseSettings) -> schema_check.SchemaReport:
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        return await schema_check.check(conn, db.schema_name)


@pytest.mark.services  # the PostgreSQL of the default settings (tests/helpers/fast.py)
def test_the_committed_manifest_is_what_the_generator_makes_of_antennas_schema() -> None:
    url = DatabaseSettings().url
    made = schema_manifest.generate(url, FIXTURES / "schema.sql")
    committed = (ROOT / "antenna_db" / "schema_manifest.json").read_text()
    assert made == committed, "antenna_db/schema_manifest.json is stale: run make schema-manifest"


async def test_antennas_own_database_and_a_standalone_one_pass(
    antenna_db: DatabaseSettings, pool: Any, session_settings: Settings
) -> None:
    assert (await report(antenna_db)).problems == []
    # ``pool``: the session's schema, made by db migrate on a bare database (standalone).
    standalone = await report(session_settings.database)
    assert standalone.problems == [] and standalone.notes == []


async def test_a_retyped_bbox_and_a_missing_guardian_table_refuse_every_start(
    antenna_db: DatabaseSettings, settings: Settings
) -> None:
    """Row 10: both passed ``db migrate``; then collect retried for ever, silently, and every
    non-superuser request was a 500."""
    await alter(
        antenna_db,
        "ALTER TABLE main_detection ALTER COLUMN bbox TYPE text USING bbox::text",
        "DROP TABLE guardian_groupobjectpermission",
    )
    found = await report(antenna_db)
    assert found.problems == [
        "table guardian_groupobjectpermission is missing",
        "column main_detection.bbox is text, antenna-jobs expects jsonb",
    ]
    real = with_settings(
        settings,
        database=antenna_db,
        antenna=AntennaSettings(broker_url=BROKER_URL, jobs_queue=f"q-{uuid.uuid4().hex}"),
    )

    def named(err: pytest.ExceptionInfo[SchemaIncompatible]) -> None:
        text = str(err.value)
        assert "main_detection.bbox is text, antenna-jobs expects jsonb" in text
        assert "guardian_groupobjectpermission is missing" in text

    # db migrate (the command: exit 1, the differences named)
    from cli.main import app

    env = {
        "ANTENNA_JOBS_DATABASE_SCHEMA": antenna_db.schema_name,
        "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": antenna_db.jobs_schema,
        "ANTENNA_JOBS_DATABASE_URL": antenna_db.url,
    }
    # In a thread: the command runs its own event loop.
    result = await asyncio.to_thread(CliRunner().invoke, app, ["db", "migrate"], env=env)
    assert result.exit_code == 1
    assert "main_detection.bbox is text, antenna-jobs expects jsonb" in result.output
    assert "guardian_groupobjectpermission is missing" in result.output
    # the worker
    with pytest.raises(SchemaIncompatible) as err:
        await Resources.open(real)
    named(err)
    # the API
    with pytest.raises(SchemaIncompatible) as err:
        async with open_resources(real):
            pass
    named(err)
    # the bridge
    with pytest.raises(SchemaIncompatible) as err:
        await run_bridge(real)
    named(err)


async def test_a_renamed_column_is_refused(antenna_db: DatabaseSettings) -> None:
    await alter(
        antenna_db, "ALTER TABLE ml_processingservice RENAME COLUMN last_seen TO last_checked"
    )
    with pytest.raises(SchemaIncompatible) as err:
        await schema_check.require_compatible(antenna_db.url, antenna_db.schema_name)
    assert err.value.report.problems == [
        "column ml_processingservice.last_seen is missing (dropped or renamed)"
    ]
    assert "new column ml_processingservice.last_checked" in " ".join(err.value.report.notes)


async def test_a_django_not_null_column_is_refused_until_it_has_a_default(
    antenna_db: DatabaseSettings,
) -> None:
    """Row 9's migration, as Django 4.2 runs it: a default for the old rows, then dropped."""
    await alter(
        antenna_db,
        "ALTER TABLE main_classification ADD COLUMN reviewed varchar(20) NOT NULL DEFAULT ''",
        "ALTER TABLE main_classification ALTER COLUMN reviewed DROP DEFAULT",
    )
    assert (await report(antenna_db)).problems == [
        "new column main_classification.reviewed character varying(20) is NOT NULL without a"
        " default: antenna-jobs does not write it"
    ]
    await alter(antenna_db, "ALTER TABLE main_classification ALTER COLUMN reviewed SET DEFAULT ''")
    assert (await report(antenna_db)).problems == []


async def test_additions_that_cannot_matter_are_accepted_and_logged(
    antenna_db: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    await alter(
        antenna_db,
        "ALTER TABLE main_classification ADD COLUMN features_2048 float8[]",
        "ALTER TABLE main_detection ADD COLUMN rotation float8 NOT NULL DEFAULT 0",
        "ALTER TABLE main_project ADD COLUMN tier int NOT NULL DEFAULT 1",
        "ALTER TABLE main_project ALTER COLUMN tier DROP DEFAULT",  # we never insert projects
        "ALTER TABLE ml_pipeline ALTER COLUMN slug TYPE varchar(500)",
        "CREATE INDEX ON main_detection (detection_score)",
        "CREATE TABLE main_newthing (id bigint PRIMARY KEY, note text NOT NULL)",
    )
    with caplog.at_level(logging.INFO, logger="antenna_jobs.schema"):
        found = await schema_check.require_compatible(antenna_db.url, antenna_db.schema_name)
    assert found.problems == []
    assert found.notes == [
        "new column main_classification.features_2048 double precision[] (nullable)",
        "new column main_detection.rotation double precision (default '0')",
        "new column main_project.tier integer (NOT NULL, a table we never insert into)",
        "ml_pipeline.slug widened from character varying(255) to character varying(500)",
    ]
    assert found.other_tables == len(antennas_tables()) - len(schema_manifest.USED_TABLES) + 1
    assert "cannot matter (accepted): new column main_classification.features_2048" in caplog.text


async def test_the_worker_checks_again_when_asked_and_shows_the_count(
    antenna_db: DatabaseSettings,
) -> None:
    """The worker's check after start (its schedule, or at once after a schema error): the
    differences in its log and in antenna_jobs_schema_problems, back to 0 once fixed."""
    watch = SchemaWatch(antenna_db, interval=3600)
    running = asyncio.create_task(watch.run())
    try:
        await alter(antenna_db, "ALTER TABLE main_detection RENAME COLUMN path TO crop_path")
        watch.request()
        await eventually(lambda: watch.last is not None and not watch.last.ok, within=30)
        assert watch.last is not None
        assert watch.last.problems == ["column main_detection.path is missing (dropped or renamed)"]
        assert SCHEMA_PROBLEMS._value.get() == 1
        await alter(antenna_db, "ALTER TABLE main_detection RENAME COLUMN crop_path TO path")
        watch.request()
        await eventually(lambda: watch.last is not None and watch.last.ok, within=30)
        assert SCHEMA_PROBLEMS._value.get() == 0
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_rows_own_data_is_no_schema_reason_and_a_new_columns_null_is(
    antenna_db: DatabaseSettings,
) -> None:
    """What the saver tells apart: a label longer than its column or a NULL in a column the
    manifest has NOT NULL is the row's fault (that image fails); a NULL in a column we do not
    know, or a missing column, is the schema's (the results wait)."""
    await alter(
        antenna_db,
        "ALTER TABLE main_taxon ADD COLUMN reviewed text NOT NULL DEFAULT ''",
        "ALTER TABLE main_taxon ALTER COLUMN reviewed DROP DEFAULT",
    )

    async def error(statement: str) -> psycopg.Error:
        async with await psycopg.AsyncConnection.connect(antenna_db.url, autocommit=True) as c:
            await c.execute(f"SET search_path TO {antenna_db.schema_name}")
            with pytest.raises(psycopg.Error) as err:
                await c.execute(statement)
            return err.value

    insert = (
        "INSERT INTO main_taxon (created_at, updated_at, name, rank, active, author, notes,"
        " parents_json, reviewed) VALUES (now(), now(), {name}, 'SPECIES', true, '', '',"
        " '[]', {reviewed})"
    )
    too_long = await error(insert.format(name=f"'{'x' * 300}'", reviewed="''"))
    assert schema_check.schema_reason(too_long) is None
    null_name = await error(insert.format(name="NULL", reviewed="''"))
    assert schema_check.schema_reason(null_name) is None
    null_new = await error(insert.format(name="'a'", reviewed="NULL"))
    fault = schema_check.schema_reason(null_new)
    assert fault is not None and (fault.table, fault.column) == ("main_taxon", "reviewed")
    missing = await error("SELECT no_such_column FROM main_taxon")
    assert schema_check.schema_reason(missing) is not None
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = null_new
    assert schema_check.schema_reason(wrapped) == fault
