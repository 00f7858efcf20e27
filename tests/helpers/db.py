"""Reading what a job left in Antenna's tables, for assertions.

The test session's views ``job_detections`` and ``job_classifications`` put Antenna's
detections and classifications next to the jobs whose image sets hold their captures (Antenna's
tables have no job column), with the box as ``bbox_x1..y2`` and a classification's taxon name.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db import users
from core import job_runs
from core.naming import Names

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
