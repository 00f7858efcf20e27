"""Reading what a job left in the tables, for assertions (rows, statuses, logs, counts).

The test session's views ``job_detections`` and ``job_classifications`` put Antenna's
detections and classifications next to the jobs whose image sets hold their captures (Antenna's
tables have no job column), with the box as ``bbox_x1..y2`` and a classification's taxon name.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db import job_store, users
from antenna_db.job_store import JobRecord
from core.naming import Names
from core.states import JobState
from storage import job_runs

VIEWS = """
CREATE VIEW job_detections AS
SELECT d.id, ji.job_id, d.source_image_id, d.detection_algorithm_id AS algorithm_id,
       (d.bbox->>0)::float8 AS bbox_x1, (d.bbox->>1)::float8 AS bbox_y1,
       (d.bbox->>2)::float8 AS bbox_x2, (d.bbox->>3)::float8 AS bbox_y2,
       d.path AS crop_image_url, d.detection_time AS timestamp, d.occurrence_id, d.created_at
FROM main_detection d JOIN job_images ji ON ji.source_image_id = d.source_image_id;

CREATE VIEW job_classifications AS
SELECT c.id, c.detection_id, d.job_id, c.algorithm_id, t.name AS taxon, c.score, c.scores,
       c.logits, c.terminal, c.taxon_id, c.category_map_id
FROM main_classification c JOIN job_detections d ON d.id = c.detection_id
LEFT JOIN main_taxon t ON t.id = c.taxon_id;
"""


async def create_views(conn: AsyncConnection[Any], schema: str) -> None:
    await conn.execute(f"SET search_path TO {schema}")
    await conn.execute(VIEWS)


async def create_token(conn: AsyncConnection[Any], name: str) -> str:
    """A superuser's token (what most tests use; permission tests make their own)."""
    return await users.create_token_user(conn, name, superuser=True)


NAMES = Names()


async def run_consumer(pool: Any, job_id: int) -> str | None:
    """The durable consumer of the job's current run (None before a workflow took the job)."""
    async with pool.connection() as conn:
        run = await job_runs.get(conn, job_id)
    return run.consumer if run else None


async def fetch(pool: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def fetch_one(pool: Any, sql: str, *params: Any) -> dict[str, Any] | None:
    rows = await fetch(pool, sql, *params)
    return rows[0] if rows else None


async def get_job(pool: Any, job_id: int) -> JobRecord:
    async with pool.connection() as conn:
        return await job_store.get_job(conn, job_id)


async def job_status(pool: Any, job_id: int) -> JobState:
    async with pool.connection() as conn:
        return await job_store.get_status(conn, job_id)


async def job_logs(pool: Any, job_id: int) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await job_store.latest_logs(conn, job_id, 500)


async def image_ids(pool: Any, job_id: int) -> list[int]:
    """The job's images in collect order."""
    rows = await fetch(
        pool, "SELECT source_image_id FROM job_images WHERE job_id = %s ORDER BY ordinal", job_id
    )
    return [r["source_image_id"] for r in rows]


async def image_statuses(pool: Any, job_id: int) -> dict[int, tuple[str, str | None]]:
    rows = await fetch(
        pool, "SELECT source_image_id, status, error FROM job_images WHERE job_id = %s", job_id
    )
    return {r["source_image_id"]: (r["status"], r["error"]) for r in rows}


async def collection_image_ids(pool: Any, collection_id: int) -> list[int]:
    rows = await fetch(
        pool,
        "SELECT sourceimage_id AS source_image_id FROM main_sourceimagecollection_images"
        " WHERE sourceimagecollection_id = %s ORDER BY source_image_id",
        collection_id,
    )
    return [r["source_image_id"] for r in rows]


async def job_counts(pool: Any, job_id: int) -> dict[str, int]:
    """The job's images by status (``total``, ``processed``, ``failed``, ``pending``)."""
    row = await fetch_one(
        pool,
        "SELECT count(*) AS total,"
        " count(*) FILTER (WHERE status = 'processed') AS processed,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " count(*) FILTER (WHERE status = 'pending') AS pending"
        " FROM job_images WHERE job_id = %s",
        job_id,
    )
    assert row is not None
    return dict(row)


async def inbox_rows(pool: Any, job_id: int) -> list[dict[str, Any]]:
    """The job's stored results, each payload with its classifications' arrays put back from
    result_arrays (where the API stores them apart from the JSON)."""
    rows = await fetch(
        pool,
        "SELECT id, image_id, reply_subject, is_error, payload FROM result_inbox"
        " WHERE job_id = %s ORDER BY id",
        job_id,
    )
    arrays = await fetch(
        pool,
        "SELECT inbox_id, det, cls, scores, logits FROM result_arrays WHERE inbox_id = ANY(%s)",
        [r["id"] for r in rows],
    )
    by_id = {r["id"]: r for r in rows}
    for a in arrays:
        c = by_id[a["inbox_id"]]["payload"]["detections"][a["det"]]["classifications"][a["cls"]]
        del c["n_scores"]
        c["scores"] = a["scores"]
        c["logits"] = a["logits"]
    return rows


async def run_counters(pool: Any, job_id: int) -> tuple[int, int]:
    """The current run's processed and failed counts."""
    async with pool.connection() as conn:
        run = await job_runs.get(conn, job_id)
    return (run.counters.processed, run.counters.failed) if run else (0, 0)
