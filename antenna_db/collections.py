"""Capture sets (``main_sourceimagecollection`` and its images): their sampling settings and
the set-based replacement of their members by populate_captures_collection.

Antenna keeps a capture set's sampling on the set itself (``method``, ``kwargs``); a job created
by Antenna names only the set. The methods run here are ``full`` (every capture of the project),
``random`` (``size``) and ours (``every_nth``, ``time_window``); the window kwargs filter all.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection

from core.job_params import PopulateParams, SampleMethod

# What populate writes (its caller marks them for Antenna's cache once committed).
POPULATE_TABLES = ("main_sourceimagecollection", "main_sourceimagecollection_images")
# Antenna's names for our methods, stored on the capture set so its UI shows them.
ANTENNA_METHOD = {SampleMethod.ALL: "full", SampleMethod.RANDOM: "random"}
OUR_METHOD = {"full": SampleMethod.ALL.value, "random": SampleMethod.RANDOM.value}

# The project's captures inside the optional window (UTC dates inclusive; hours of the day,
# hour_start > hour_end wrapping past midnight).
_WINDOW = """
SELECT si.id, si."timestamp" FROM main_sourceimage si
LEFT JOIN main_deployment dep ON dep.id = si.deployment_id
WHERE coalesce(si.project_id, dep.project_id) = %(project)s
  AND (%(date_start)s::date IS NULL
       OR (si."timestamp" AT TIME ZONE 'UTC')::date >= %(date_start)s::date)
  AND (%(date_end)s::date IS NULL
       OR (si."timestamp" AT TIME ZONE 'UTC')::date <= %(date_end)s::date)
  AND (%(hour_start)s::int IS NULL OR CASE
        WHEN %(hour_start)s::int <= %(hour_end)s::int
          THEN extract(hour FROM si."timestamp" AT TIME ZONE 'UTC')
               BETWEEN %(hour_start)s::int AND %(hour_end)s::int
        ELSE extract(hour FROM si."timestamp" AT TIME ZONE 'UTC') >= %(hour_start)s::int
          OR extract(hour FROM si."timestamp" AT TIME ZONE 'UTC') <= %(hour_end)s::int
       END)
"""
_SAMPLES: dict[SampleMethod, str] = {
    SampleMethod.ALL: "SELECT id FROM candidates",
    SampleMethod.TIME_WINDOW: "SELECT id FROM candidates",
    SampleMethod.RANDOM: (
        "SELECT id FROM candidates ORDER BY md5(%(seed)s::text || ':' || id), id LIMIT %(size)s"
    ),
    # The first capture in time order, then every Nth after it.
    SampleMethod.EVERY_NTH: (
        'SELECT id FROM (SELECT id, row_number() OVER (ORDER BY "timestamp" NULLS LAST, id)'
        " AS n FROM candidates) c WHERE (n - 1) %% %(every)s = 0"
    ),
}


async def sampling(conn: AsyncConnection[Any], collection_id: int) -> dict[str, Any] | None:
    """The capture set's own sampling as populate params (Antenna's method and kwargs)."""
    cur = await conn.execute(
        "SELECT method, kwargs FROM main_sourceimagecollection WHERE id = %s", (collection_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    kwargs = row["kwargs"] if isinstance(row["kwargs"], dict) else {}
    return {**kwargs, "method": OUR_METHOD.get(row["method"], row["method"])}


async def populate(
    conn: AsyncConnection[Any],
    *,
    collection_id: int,
    project_id: int,
    params: PopulateParams,
    seed: int,
) -> tuple[int, int] | None:
    """Replace the set's captures with the sample, in the caller's transaction; (added,
    considered), or None when the set is gone (or not the project's)."""
    # Taken first: a second populate of the same set waits here.
    cur = await conn.execute(
        "UPDATE main_sourceimagecollection SET method = %s, kwargs = %s::jsonb, updated_at = now()"
        " WHERE id = %s AND project_id = %s",
        (
            ANTENNA_METHOD.get(params.method, params.method.value),
            json.dumps(params.model_dump(mode="json", exclude={"method"}, exclude_none=True)),
            collection_id,
            project_id,
        ),
    )
    if cur.rowcount != 1:
        return None
    await conn.execute(
        "DELETE FROM main_sourceimagecollection_images WHERE sourceimagecollection_id = %s",
        (collection_id,),
    )
    cur = await conn.execute(
        "WITH candidates AS (" + _WINDOW + "), sample AS (" + _SAMPLES[params.method] + ")"
        ", added AS (INSERT INTO main_sourceimagecollection_images"
        " (sourceimagecollection_id, sourceimage_id)"
        " SELECT %(collection)s, id FROM sample RETURNING 1)"
        " SELECT (SELECT count(*) FROM added) AS added,"
        " (SELECT count(*) FROM candidates) AS considered",
        {
            "project": project_id,
            "collection": collection_id,
            "date_start": params.date_start,
            "date_end": params.date_end,
            "hour_start": params.hour_start,
            "hour_end": params.hour_end,
            "size": params.size,
            "every": params.every,
            "seed": params.seed if params.seed is not None else seed,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["added"]), int(row["considered"])


async def image_ids(conn: AsyncConnection[Any], collection_id: int) -> list[int]:
    cur = await conn.execute(
        "SELECT sourceimage_id AS id FROM main_sourceimagecollection_images"
        " WHERE sourceimagecollection_id = %s ORDER BY sourceimage_id",
        (collection_id,),
    )
    return [int(r["id"]) for r in await cur.fetchall()]
