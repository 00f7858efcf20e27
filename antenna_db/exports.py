"""data_export jobs on Antenna's tables: the detections (and their classifications) of a project
or capture set, read page by page, and the ``exports_dataexport`` row a job reports to.

Null-bbox "nothing found" markers are not detections and are not exported.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db import cachalot
from antenna_db.capture_urls import CAPTURE_URL

_SCOPE = """
FROM main_detection d
JOIN main_sourceimage si ON si.id = d.source_image_id
LEFT JOIN main_deployment dep ON dep.id = si.deployment_id
LEFT JOIN main_s3storagesource ds ON ds.id = dep.data_source_id
LEFT JOIN ml_algorithm a ON a.id = d.detection_algorithm_id
WHERE coalesce(si.project_id, dep.project_id) = %(project)s
  AND d.bbox IS NOT NULL AND d.bbox <> 'null'::jsonb
  AND (%(collection)s::bigint IS NULL OR EXISTS (
        SELECT 1 FROM main_sourceimagecollection_images ci
        WHERE ci.sourceimagecollection_id = %(collection)s
          AND ci.sourceimage_id = d.source_image_id))
"""
_CLASSIFICATIONS = """
coalesce((SELECT json_agg(json_build_object(
    'classification_id', c.id, 'taxon', t.name, 'algorithm', ca.key,
    'score', c.score, 'terminal', c.terminal, 'timestamp', c."timestamp") ORDER BY c.id)
  FROM main_classification c
  LEFT JOIN ml_algorithm ca ON ca.id = c.algorithm_id
  LEFT JOIN main_taxon t ON t.id = c.taxon_id
  WHERE c.detection_id = d.id), '[]'::json)
"""
_RECORD = (
    "json_build_object('detection_id', d.id, 'source_image_id', si.id,"
    f" 'source_image_url', {CAPTURE_URL}, 'source_image_timestamp', si.\"timestamp\","
    " 'deployment_id', si.deployment_id, 'occurrence_id', d.occurrence_id,"
    " 'algorithm', a.key, 'bbox', d.bbox, 'timestamp', d.detection_time,"
    " 'crop_image_url', d.path, 'classifications', " + _CLASSIFICATIONS + ")::text"
)
PAGE = "SELECT d.id, " + _RECORD + " AS record " + _SCOPE + " AND d.id > %(after)s ORDER BY d.id"
COUNT = "SELECT count(*) AS n " + _SCOPE


async def count(conn: AsyncConnection[Any], project_id: int, collection_id: int | None) -> int:
    cur = await conn.execute(COUNT, {"project": project_id, "collection": collection_id})
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def format_of(conn: AsyncConnection[Any], export_id: int) -> str | None:
    cur = await conn.execute("SELECT format FROM exports_dataexport WHERE id = %s", (export_id,))
    row = await cur.fetchone()
    return str(row["format"]) if row else None


async def create(conn: AsyncConnection[Any], project_id: int, user_id: int, fmt: str) -> int:
    """The export row a data_export job reports to (Antenna makes one per export job)."""
    cur = await conn.execute(
        "INSERT INTO exports_dataexport (created_at, updated_at, format, filters,"
        " filters_display, file_url, record_count, file_size, project_id, user_id)"
        " VALUES (now(), now(), %s, '{}'::jsonb, '{}'::jsonb, NULL, 0, 0, %s, %s) RETURNING id",
        (fmt, project_id, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    cachalot.wrote("exports_dataexport")
    return int(row["id"])


async def finish(
    conn: AsyncConnection[Any], export_id: int, *, file_url: str, records: int, size: int
) -> None:
    await conn.execute(
        "UPDATE exports_dataexport SET file_url = %s, record_count = %s, file_size = %s,"
        " updated_at = now() WHERE id = %s",
        (file_url[:200], records, size, export_id),
    )
    cachalot.wrote("exports_dataexport")
