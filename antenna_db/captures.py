"""Captures (``main_sourceimage``) as a job sees them: which ones it processes, and their URLs.

Collect materialises a job's image set (our ``job_images``) from Antenna's capture tables with
one set-based statement: the job's capture set, else its single capture, else its station's
captures; minus what Antenna's ``filter_processed_images`` skips (docs/antenna-db.md
section 2, the SQL form verified against Antenna's Python) unless the project reprocesses
everything; shuffled if the job says so, then cut to its limit.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from antenna_db.capture_urls import CAPTURE_JOINS, CAPTURE_URL
from antenna_db.job_store import JobRecord

_CANDIDATES = {
    "collection": (
        "SELECT sourceimage_id AS id FROM main_sourceimagecollection_images"
        " WHERE sourceimagecollection_id = %(source)s"
    ),
    "single": "SELECT id FROM main_sourceimage WHERE id = %(source)s",
    "deployment": "SELECT id FROM main_sourceimage WHERE deployment_id = %(source)s",
}

# filter_processed_images: an image still needs processing unless it has detections from the
# pipeline's algorithms and either all are null markers, or every real one is classified and
# together they carry a classification from each of the pipeline's classifiers.
_MATERIALISE = """
WITH alg AS (
    SELECT a.id, a.task_type FROM ml_algorithm a
    JOIN ml_pipeline_algorithms pa ON pa.algorithm_id = a.id WHERE pa.pipeline_id = %(pipeline)s
), clf AS (
    SELECT id FROM alg
    WHERE task_type IS NULL OR task_type NOT IN ('detection', 'localization', 'segmentation')
), cand AS ({candidates}
), real AS (
    SELECT d.id, d.source_image_id FROM main_detection d
    WHERE d.source_image_id IN (SELECT id FROM cand)
      AND d.detection_algorithm_id IN (SELECT id FROM alg)
      AND d.bbox IS NOT NULL AND d.bbox <> 'null'::jsonb
), todo AS (
    SELECT cand.id FROM cand
    WHERE %(reprocess_all)s
       OR NOT EXISTS (SELECT 1 FROM clf)
       OR NOT EXISTS (SELECT 1 FROM main_detection d WHERE d.source_image_id = cand.id
                      AND d.detection_algorithm_id IN (SELECT id FROM alg))
       OR EXISTS (SELECT 1 FROM real d WHERE d.source_image_id = cand.id
                  AND NOT EXISTS (SELECT 1 FROM main_classification c WHERE c.detection_id = d.id))
       OR (EXISTS (SELECT 1 FROM real d WHERE d.source_image_id = cand.id)
           AND EXISTS (SELECT 1 FROM clf WHERE clf.id NOT IN (
                 SELECT c.algorithm_id FROM main_classification c
                 JOIN real d ON d.id = c.detection_id
                 WHERE d.source_image_id = cand.id AND c.algorithm_id IS NOT NULL)))
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY CASE WHEN %(shuffle)s THEN random() END, id) AS ordinal,
           count(*) OVER () AS n
    FROM todo
), inserted AS (
    INSERT INTO job_images (job_id, ordinal, source_image_id)
    SELECT %(job)s, ordinal, id FROM numbered
    WHERE %(limit)s::integer IS NULL OR ordinal <= %(limit)s::integer
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS total,
       coalesce((SELECT max(n) FROM numbered), 0) AS candidates,
       (SELECT count(*) FROM cand) AS source_size
"""

_REPROCESS_FLAG = (
    "SELECT coalesce(feature_flags->'reprocess_all_images' = 'true'::jsonb, false) AS reprocess"
    " FROM main_project WHERE id = %s"
)


class Collected(BaseModel):
    total: int
    # Images left once the processed ones are skipped, before the job's limit.
    candidates: int
    # Images of the job's source (capture set, single capture or station).
    source_size: int
    source: str


def image_source(job: JobRecord) -> tuple[str, int] | None:
    """Where Antenna's collect_images takes a job's images from, in its order of preference."""
    if job.collection_id is not None:
        return "collection", job.collection_id
    if job.source_image_single_id is not None:
        return "single", job.source_image_single_id
    if job.deployment_id is not None:
        return "deployment", job.deployment_id
    return None


def describe_source(source: tuple[str, int] | None) -> str:
    if source is None:
        return "no capture source"
    kind, ident = source
    return {"collection": "capture set", "single": "capture", "deployment": "station"}[
        kind
    ] + f" {ident}"


async def materialise(conn: AsyncConnection[Any], job: JobRecord) -> Collected:
    """Replace the job's image set (in the caller's transaction) and count what went in."""
    source = image_source(job)
    await conn.execute("DELETE FROM job_images WHERE job_id = %s", (job.id,))
    if source is None or job.pipeline_id is None:
        return Collected(total=0, candidates=0, source_size=0, source=describe_source(source))
    cur = await conn.execute(_REPROCESS_FLAG, (job.project_id,))
    flag = await cur.fetchone()
    cur = await conn.execute(
        _MATERIALISE.format(candidates=_CANDIDATES[source[0]]),
        {
            "job": job.id,
            "pipeline": job.pipeline_id,
            "source": source[1],
            "reprocess_all": bool(flag and flag["reprocess"]),
            "shuffle": job.shuffle,
            "limit": job.limit,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return Collected(
        total=int(row["total"]),
        candidates=int(row["candidates"]),
        source_size=int(row["source_size"]),
        source=describe_source(source),
    )


async def materialise_failed(conn: AsyncConnection[Any], job: JobRecord) -> Collected:
    """A failed-only retry: replace the job's image set (in the caller's transaction) by the
    images its previous run failed, in their previous order."""
    cur = await conn.execute(
        "SELECT source_image_id, status FROM job_images WHERE job_id = %s ORDER BY ordinal",
        (job.id,),
    )
    rows = await cur.fetchall()
    failed = [int(r["source_image_id"]) for r in rows if r["status"] == "failed"]
    await conn.execute("DELETE FROM job_images WHERE job_id = %s", (job.id,))
    await conn.execute(
        "INSERT INTO job_images (job_id, ordinal, source_image_id)"
        " SELECT %s, ordinality, id FROM unnest(%s::bigint[]) WITH ORDINALITY AS f(id, ordinality)",
        (job.id, failed),
    )
    return Collected(
        total=len(failed),
        candidates=len(failed),
        source_size=len(rows),
        source="the images that failed in the previous run",
    )


async def image_page(
    conn: AsyncConnection[Any],
    job_id: int,
    after: int,
    limit: int,
    *,
    pending_only: bool = False,
) -> list[dict[str, Any]]:
    """The next ``limit`` images of the job's set after ordinal ``after``: ordinal,
    source_image_id and url (NULL when the capture has none or is gone)."""
    pending = " AND status = 'pending'" if pending_only else ""
    # The page first, then its captures: joined before the LIMIT, every row after ``after``
    # was joined and sorted for each page.
    cur = await conn.execute(
        f"SELECT ji.ordinal, ji.source_image_id, {CAPTURE_URL} AS url FROM ("
        "  SELECT ordinal, source_image_id FROM job_images"
        f"  WHERE job_id = %s AND ordinal > %s{pending} ORDER BY ordinal LIMIT %s"
        f") ji{CAPTURE_JOINS} ORDER BY ji.ordinal",
        (job_id, after, limit),
    )
    return list(await cur.fetchall())


async def analyse_job_images(conn: AsyncConnection[Any]) -> None:
    """Refresh the planner's statistics of job_images (a sample: ~0.1 s at any size)."""
    await conn.execute("ANALYZE job_images")


async def publishable_count(conn: AsyncConnection[Any], job_id: int) -> int:
    """Images of the job's set that have a URL (each becomes one task message)."""
    cur = await conn.execute(
        f"SELECT count(*) AS n FROM job_images ji{CAPTURE_JOINS}"
        f" WHERE ji.job_id = %s AND ({CAPTURE_URL}) IS NOT NULL",
        (job_id,),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
