"""Issue 17 row 3: every registration string within its Antenna column's limit and of a sane
shape, else 400 naming the field, and nothing written (in-process app, real PostgreSQL)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from antenna_db.registration_checks import COLUMN_LIMITS
from core.states import JobState
from tests.helpers.api import Api
from tests.helpers.jobs import make_job

LONG = "x" * 256


def _body(**change: Any) -> tuple[dict[str, Any], str]:
    suffix = uuid.uuid4().hex[:8]
    algorithm: dict[str, Any] = {
        "name": f"Detector {suffix}",
        "key": f"bounds-det-{suffix}",
        "task_type": "localization",
        "category_map": {"data": [], "labels": ["a"], "version": "v1"},
    }
    pipeline: dict[str, Any] = {
        "name": f"Bounds {suffix}",
        "slug": f"bounds-{suffix}",
        "version": 1,
        "algorithms": [algorithm],
    }
    body: dict[str, Any] = {"processing_service_name": f"bounds-{suffix}", "pipelines": [pipeline]}
    for path, value in change.items():
        where: Any = {"body": body, "pipeline": pipeline, "algorithm": algorithm}
        *parents, leaf = path.split("__")
        target = where[parents[0]]
        for parent in parents[1:]:
            target = target[parent]
        target[leaf] = value
    return body, pipeline["slug"]


CASES = [
    ({"body__processing_service_name": LONG}, "processing_service_name"),
    ({"body__processing_service_name": "   "}, "processing_service_name"),
    ({"pipeline__slug": LONG}, "pipelines[0].slug"),
    ({"pipeline__slug": ""}, "pipelines[0].slug"),
    ({"pipeline__slug": "   "}, "pipelines[0].slug"),
    ({"pipeline__slug": "../../etc/passwd"}, "pipelines[0].slug"),
    ({"pipeline__slug": "a,b"}, "pipelines[0].slug"),
    ({"pipeline__slug": "a b"}, "pipelines[0].slug"),
    ({"pipeline__name": LONG}, "pipelines[0].name"),
    ({"pipeline__name": ""}, "pipelines[0].name"),
    ({"pipeline__version": -5}, "pipelines[0].version"),
    ({"algorithm__key": LONG}, "pipelines[0].algorithms[0].key"),
    ({"algorithm__key": "a,b"}, "pipelines[0].algorithms[0].key"),
    ({"algorithm__key": "..\\evil"}, "pipelines[0].algorithms[0].key"),
    ({"algorithm__key": "  "}, "pipelines[0].algorithms[0].key"),
    ({"algorithm__name": LONG}, "pipelines[0].algorithms[0].name"),
    ({"algorithm__name": "   "}, "pipelines[0].algorithms[0].name"),
    ({"algorithm__task_type": LONG}, "pipelines[0].algorithms[0].task_type"),
    ({"algorithm__task_type": ""}, "pipelines[0].algorithms[0].task_type"),
    ({"algorithm__version": -5}, "pipelines[0].algorithms[0].version"),
    ({"algorithm__version_name": LONG}, "pipelines[0].algorithms[0].version_name"),
    ({"algorithm__uri": LONG}, "pipelines[0].algorithms[0].uri"),
    ({"algorithm__category_map__version": LONG}, "pipelines[0].algorithms[0].category_map.version"),
    ({"algorithm__category_map__uri": LONG}, "pipelines[0].algorithms[0].category_map.uri"),
    (
        {"algorithm__category_map__labels": ["ok", LONG]},
        "pipelines[0].algorithms[0].category_map.labels[1]",
    ),
]


@pytest.mark.parametrize(("change", "field"), CASES)
async def test_registration_values_are_within_their_columns(api: Api, pool, change, field):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    url = f"/projects/{job.seeded.project_id}/pipelines/"
    body, slug = _body(**change)
    response = await api.client.post(url, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field, response.json()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM ml_pipeline WHERE slug = %s", (slug,))
        assert (await cur.fetchone())["n"] == 0
    # The API (and its database connection) carries on: the same body, fixed, is stored.
    fixed, _ = _body()
    assert (await api.client.post(url, json=fixed)).status_code == 201


async def test_every_limit_is_its_columns(pool):
    """COLUMN_LIMITS against the columns themselves (the standalone tables are Antenna's
    schema.sql, checked column by column by test_standalone_schema.py)."""
    async with pool.connection() as conn:
        for (table, column), limit in COLUMN_LIMITS.items():
            cur = await conn.execute(
                "SELECT format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
                " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
                (table, column),
            )
            row = await cur.fetchone()
            assert row is not None, (table, column)
            found = re.search(r"character varying\((\d+)\)", row["type"])
            assert found and int(found.group(1)) == limit, (table, column, row["type"])
