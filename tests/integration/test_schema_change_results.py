"""No result lost to a schema change (issue 17 item 4; row 9 of its table).

A job runs on a database made by Antenna's migrations (a schema of this test's own) with the
worker and the API in-process. Half its results are saved; then Antenna's schema changes (row 9:
Django's migration adds a NOT NULL column to ``main_classification`` as Django 4.2 does, a
default for the old rows, then the default dropped; also a renamed and a retyped column), and
the other half is posted. Every save of them is refused: the results wait
in the inbox (no image failed, nothing counted), the job log says once what is wrong, the run's
row, ``antenna-jobs status``'s figures and /metrics show it; once the schema is compatible again
(the column gets a default) the job carries on by itself and ends SUCCESS with every posted
result saved exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from rich.console import Console

from antenna_db import seed, users
from cli.commands.status import render
from core.metrics import SCHEMA_REFUSALS
from core.settings import DatabaseSettings, Settings
from core.states import JobState
from job_control.metrics import overview_metrics
from job_control.overview import gather
from storage.pool import open_pool
from tests.helpers import eventually
from tests.helpers.antenna import antenna_schema
from tests.helpers.api import answer_tasks, app_with_workers, start_over_api, take_tasks
from tests.helpers.db import NAMES, fetch, fetch_one, job_counts, job_logs, job_status
from tests.helpers.settings import with_settings

IMAGES = 40
COLUMN = "reviewed"


@pytest_asyncio.fixture
async def antenna_db(session_settings: Settings) -> AsyncIterator[DatabaseSettings]:
    async with antenna_schema(session_settings.database, "aj_s17r") as db:
        yield db


async def counts(pool: Any, job_id: int) -> dict[str, int]:
    """The job's images processed and failed, and its results still in the inbox."""
    images = await job_counts(pool, job_id)
    inbox = await fetch_one(pool, "SELECT count(*) FROM result_inbox WHERE job_id = %s", job_id)
    assert inbox is not None
    return {"processed": images["processed"], "failed": images["failed"], "inbox": inbox["count"]}


# (how Antenna's schema changes under the running job, how the operator makes it compatible
# again, what the job log must name)
CHANGES = {
    # Row 9: Django 4.2 adds a NOT NULL field in two steps (a default for the old rows, then
    # the default dropped); the operator gives the column a default.
    "django_not_null_column": (
        [
            f"ALTER TABLE main_classification ADD COLUMN {COLUMN} varchar(20) NOT NULL DEFAULT ''",
            f"ALTER TABLE main_classification ALTER COLUMN {COLUMN} DROP DEFAULT",
        ],
        [f"ALTER TABLE main_classification ALTER COLUMN {COLUMN} SET DEFAULT ''"],
        f"main_classification.{COLUMN}",
    ),
    # A column our INSERT names is renamed (and renamed back).
    "renamed_column": (
        ["ALTER TABLE main_classification RENAME COLUMN terminal TO is_terminal"],
        ["ALTER TABLE main_classification RENAME COLUMN is_terminal TO terminal"],
        '"terminal"',
    ),
    # A column's type changes (row 10's bbox, after the workers started), and changes back.
    "retyped_column": (
        ["ALTER TABLE main_detection ALTER COLUMN bbox TYPE text USING bbox::text"],
        ["ALTER TABLE main_detection ALTER COLUMN bbox TYPE jsonb USING bbox::jsonb"],
        "text = jsonb",
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_results_posted_while_the_schema_is_incompatible_wait_and_are_saved_once(
    change: str, antenna_db: DatabaseSettings, settings: Settings, temporal_client: Any
) -> None:
    breaking, fixing, named = CHANGES[change]
    real = with_settings(settings, database=antenna_db, jobs={"schema_retry_max": "1s"})
    pool = await open_pool(antenna_db)
    try:
        async with pool.connection() as conn:
            seeded = await seed.seed(conn, IMAGES)
            key = await users.create_token_user(conn, "schema change", superuser=True)
        async with app_with_workers(real, pool, temporal_client, key) as client:
            job_id = await start_over_api(client, seeded)
            first = await take_tasks(client, job_id, IMAGES // 2)
            await answer_tasks(client, job_id, first)
            await eventually(
                lambda: _at(pool, job_id, processed=IMAGES // 2), within=60, interval=0.2
            )

            # Antenna's deploy changes the schema while the job runs.
            async with pool.connection() as conn:
                for statement in breaking:
                    await conn.execute(statement)
            refused_before = _refusals()
            rest = await take_tasks(client, job_id, IMAGES - IMAGES // 2)
            await answer_tasks(client, job_id, rest)

            async def told() -> list[dict[str, Any]] | None:
                lines = [
                    line
                    for line in await job_logs(pool, job_id)
                    if line["message"].startswith("Results cannot be saved")
                ]
                return lines or None

            lines = await eventually(told, within=60, interval=0.2)
            assert named in lines[0]["message"], lines[0]["message"]
            assert lines[0]["level"] == "ERROR"
            # Refused again and again with backoff; nothing failed, nothing left the inbox.
            await eventually(lambda: _refusals() >= refused_before + 3, within=60, interval=0.2)
            assert await counts(pool, job_id) == {
                "processed": IMAGES // 2,
                "failed": 0,
                "inbox": IMAGES - IMAGES // 2,
            }
            assert await job_status(pool, job_id) == JobState.STARTED
            run = await fetch_one(
                pool, "SELECT schema_error FROM job_runs WHERE job_id = %s", job_id
            )
            assert run is not None and named in run["schema_error"]
            # antenna-jobs status and /metrics show it.
            overview = await gather(pool, None, NAMES, workers_window=60)
            (shown,) = [j for j in overview.running if j.id == job_id]
            assert shown.schema_error is not None and named in shown.schema_error
            screen = Console(width=400, record=True)
            screen.print(render(overview))
            text = screen.export_text()
            assert "saves wait for Antenna's schema" in text
            assert f"saves waiting for Antenna's schema: 1 jobs ({job_id})" in text
            metrics = {m.name: m for m in overview_metrics(overview)}
            assert metrics["antenna_jobs_jobs_schema_blocked"].samples[0].value >= 1

            # The operator makes the schema compatible: the job carries on by itself.
            async with pool.connection() as conn:
                for statement in fixing:
                    await conn.execute(statement)
            await eventually(lambda: _final(pool, job_id), within=120, interval=0.2)

        assert await job_status(pool, job_id) == JobState.SUCCESS
        assert await counts(pool, job_id) == {"processed": IMAGES, "failed": 0, "inbox": 0}
        # Every posted result saved exactly once: one detection and one classification each.
        per_image = await fetch(
            pool,
            "SELECT ji.source_image_id, count(DISTINCT d.id) AS detections, count(c.id) AS cls"
            " FROM job_images ji JOIN main_detection d ON d.source_image_id = ji.source_image_id"
            " LEFT JOIN main_classification c ON c.detection_id = d.id"
            " WHERE ji.job_id = %s AND d.bbox IS NOT NULL GROUP BY ji.source_image_id",
            job_id,
        )
        assert len(per_image) == IMAGES
        assert all(r["detections"] == 1 and r["cls"] == 1 for r in per_image)
        messages = [line["message"] for line in await job_logs(pool, job_id)]
        assert sum(m.startswith("Results cannot be saved") for m in messages) == 1
        assert sum(m.startswith("Results are saved again") for m in messages) == 1
        run = await fetch_one(pool, "SELECT schema_error FROM job_runs WHERE job_id = %s", job_id)
        assert run is None or run["schema_error"] is None
    finally:
        await pool.close()


def _refusals() -> float:
    """Refusals this process counted, every table together."""
    return sum(
        sample.value
        for metric in SCHEMA_REFUSALS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def _at(pool: Any, job_id: int, *, processed: int) -> bool:
    return (await counts(pool, job_id))["processed"] >= processed


async def _final(pool: Any, job_id: int) -> bool:
    return await job_status(pool, job_id) in {JobState.SUCCESS, JobState.FAILURE}


async def test_a_collect_refused_by_a_retyped_column_says_so_once_and_carries_on(
    antenna_db: DatabaseSettings, settings: Settings, temporal_client: Any
) -> None:
    """Row 10's bbox changed to text after the workers started: collect's statement fails. It
    used to retry for ever with nothing in the job log; now the log says once what is wrong,
    the attempts go on with Temporal's backoff, and the job carries on once the type is back."""
    real = with_settings(settings, database=antenna_db)
    pool = await open_pool(antenna_db)
    try:
        async with pool.connection() as conn:
            seeded = await seed.seed(conn, 10)
            key = await users.create_token_user(conn, "schema change collect", superuser=True)
        async with app_with_workers(real, pool, temporal_client, key) as client:
            async with pool.connection() as conn:
                await conn.execute(
                    "ALTER TABLE main_detection ALTER COLUMN bbox TYPE text USING bbox::text"
                )
            job_id = await start_over_api(client, seeded)

            async def told() -> list[str] | None:
                lines = [
                    line["message"]
                    for line in await job_logs(pool, job_id)
                    if "refused because Antenna's schema changed" in line["message"]
                ]
                return lines or None

            (line,) = await eventually(told, within=60, interval=0.2)
            assert line.startswith("collect_images refused") and "text <> jsonb" in line
            assert await job_status(pool, job_id) == JobState.STARTED
            async with pool.connection() as conn:
                await conn.execute(
                    "ALTER TABLE main_detection ALTER COLUMN bbox TYPE jsonb USING bbox::jsonb"
                )
            tasks = await take_tasks(client, job_id, 10)
            await answer_tasks(client, job_id, tasks)
            await eventually(lambda: _final(pool, job_id), within=60, interval=0.2)
        assert await job_status(pool, job_id) == JobState.SUCCESS
        messages = [line["message"] for line in await job_logs(pool, job_id)]
        assert sum("refused because Antenna's schema changed" in m for m in messages) == 1
    finally:
        await pool.close()
