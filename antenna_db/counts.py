"""Antenna's cached counts: a capture's ``detections_count`` (written with each batch), and a
session's and station's counts (``main_event``, ``main_deployment``; refreshed while a job runs,
throttled, and when it ends).

A detection counts as Antenna's default filters count it (ami/main/models_future/filters.py): a
real box, its occurrence determined with at least the project's score threshold, and the
determination inside the project's include taxa (if any) and outside its exclude taxa, taxa
below them included (through ``parents_json``).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db import cachalot

# A determination dt inside taxon t: t itself or below it.
_UNDER = (
    "(%s.taxon_id = o.determination_id"
    " OR dt.parents_json @> jsonb_build_array(jsonb_build_object('id', %s.taxon_id)))"
)
# o: the occurrence, dt: its determination, p: the project.
_PASSES_FILTERS = """
o.determination_id IS NOT NULL
AND o.determination_score >= p.default_filters_score_threshold
AND (NOT EXISTS (SELECT 1 FROM main_project_default_filters_include_taxa inc
                 WHERE inc.project_id = p.id)
     OR EXISTS (SELECT 1 FROM main_project_default_filters_include_taxa inc
                WHERE inc.project_id = p.id AND {inc}))
AND NOT EXISTS (SELECT 1 FROM main_project_default_filters_exclude_taxa exc
                WHERE exc.project_id = p.id AND {exc})
""".format(inc=_UNDER % ("inc", "inc"), exc=_UNDER % ("exc", "exc"))
_REAL_BOX = "d.bbox IS NOT NULL AND d.bbox <> 'null'::jsonb"
# Rows of detections (d) with their occurrence (o), determination (dt) and project (p).
_COUNTED_JOINS = """
JOIN main_occurrence o ON o.id = d.occurrence_id
LEFT JOIN main_taxon dt ON dt.id = o.determination_id
JOIN main_project p ON p.id = %(project)s
"""

# _COUNTED_JOINS for a few captures' detections: each occurrence looked up by its key (OFFSET 0
# keeps it a nested loop). Planned as a join, the skewed statistics of occurrence_id made every
# batch hash all of main_occurrence (0.66 s at 1.3M occurrences, growing with the table).
_OCCURRENCE_BY_INDEX = """
CROSS JOIN LATERAL (
    SELECT o.id, o.determination_id, o.determination_score FROM main_occurrence o
    WHERE o.id = d.occurrence_id OFFSET 0) o
LEFT JOIN main_taxon dt ON dt.id = o.determination_id
JOIN main_project p ON p.id = %(project)s
"""
_CAPTURES = f"""
UPDATE main_sourceimage si
SET detections_count = coalesce(c.n, 0), updated_at = now(),
    project_id = coalesce(si.project_id,
                          (SELECT dep.project_id FROM main_deployment dep
                           WHERE dep.id = si.deployment_id))
FROM unnest(%(images)s::bigint[]) AS img(id)
LEFT JOIN (
    SELECT d.source_image_id AS id, count(DISTINCT d.id) AS n FROM main_detection d
    {_OCCURRENCE_BY_INDEX}
    WHERE d.source_image_id = ANY(%(images)s::bigint[]) AND {_REAL_BOX} AND {_PASSES_FILTERS}
    GROUP BY d.source_image_id
) c ON c.id = img.id
WHERE si.id = img.id
"""


def _job_groups(column: str) -> str:
    """The events or deployments (``column`` of main_sourceimage) of the job's images."""
    return f"""
    SELECT DISTINCT si.{column} AS id FROM job_images ji
    JOIN main_sourceimage si ON si.id = ji.source_image_id
    WHERE ji.job_id = %(job)s AND si.{column} IS NOT NULL
"""


def _detections_by(column: str, groups: str) -> str:
    """The counted detections of each of ``groups`` (its ids by ``column`` of main_sourceimage),
    as the CTE ``dets``."""
    return f"""dets AS (
    SELECT si.{column} AS id, count(DISTINCT d.id) AS n FROM main_sourceimage si
    JOIN main_detection d ON d.source_image_id = si.id {_COUNTED_JOINS}
    WHERE si.{column} IN (SELECT id FROM {groups}) AND {_REAL_BOX} AND {_PASSES_FILTERS}
    GROUP BY si.{column}
)"""


_EVENTS = f"""
WITH ev AS ({_job_groups("event_id")}),
caps AS (
    SELECT si.event_id AS id, min(si."timestamp") AS first, max(si."timestamp") AS last,
           count(*) AS n
    FROM main_sourceimage si WHERE si.event_id IN (SELECT id FROM ev) GROUP BY si.event_id
),
{_detections_by("event_id", "ev")},
occs AS (
    SELECT o.event_id AS id, count(DISTINCT o.id) AS n FROM main_occurrence o
    LEFT JOIN main_taxon dt ON dt.id = o.determination_id
    JOIN main_project p ON p.id = %(project)s
    WHERE o.event_id IN (SELECT id FROM ev) AND {_PASSES_FILTERS}
      -- OFFSET 0: a probe of the occurrence's detections by index; as a semi-join it hashed
      -- all of main_detection (6.1 s of a 100k-capture session at 1M detections, 1.2 s now).
      AND EXISTS (SELECT 1 FROM main_detection d WHERE d.occurrence_id = o.id AND {_REAL_BOX}
                  OFFSET 0)
    GROUP BY o.event_id
)
UPDATE main_event e
SET start = coalesce(caps.first, e.start), "end" = coalesce(caps.last, e."end"),
    captures_count = coalesce(caps.n, 0), detections_count = coalesce(dets.n, 0),
    occurrences_count = coalesce(occs.n, 0), calculated_fields_updated_at = now(),
    updated_at = now()
FROM ev LEFT JOIN caps ON caps.id = ev.id LEFT JOIN dets ON dets.id = ev.id
LEFT JOIN occs ON occs.id = ev.id
WHERE e.id = ev.id
"""
_DEPLOYMENTS = f"""
WITH dep AS ({_job_groups("deployment_id")}),
caps AS (
    SELECT si.deployment_id AS id, count(*) AS n, coalesce(sum(si.size), 0) AS size,
           min(si."timestamp") AS first, max(si."timestamp") AS last
    FROM main_sourceimage si WHERE si.deployment_id IN (SELECT id FROM dep)
    GROUP BY si.deployment_id
),
evs AS (
    SELECT e.deployment_id AS id, count(*) AS n FROM main_event e
    WHERE e.deployment_id IN (SELECT id FROM dep) GROUP BY e.deployment_id
),
{_detections_by("deployment_id", "dep")},
occs AS (
    SELECT o.deployment_id AS id, count(DISTINCT o.id) AS n,
           count(DISTINCT o.determination_id) AS taxa
    FROM main_occurrence o LEFT JOIN main_taxon dt ON dt.id = o.determination_id
    JOIN main_project p ON p.id = %(project)s
    WHERE o.deployment_id IN (SELECT id FROM dep) AND o.event_id IS NOT NULL
      AND {_PASSES_FILTERS}
    GROUP BY o.deployment_id
)
UPDATE main_deployment m
SET data_source_total_files = coalesce(caps.n, 0), captures_count = coalesce(caps.n, 0),
    data_source_total_size = coalesce(caps.size, 0), events_count = coalesce(evs.n, 0),
    detections_count = coalesce(dets.n, 0), occurrences_count = coalesce(occs.n, 0),
    taxa_count = coalesce(occs.taxa, 0), first_capture_timestamp = caps.first,
    last_capture_timestamp = caps.last, updated_at = now()
FROM dep LEFT JOIN caps ON caps.id = dep.id LEFT JOIN evs ON evs.id = dep.id
LEFT JOIN dets ON dets.id = dep.id LEFT JOIN occs ON occs.id = dep.id
WHERE m.id = dep.id
"""

# The tables refresh_job_counts writes (for Antenna's query cache).
JOB_COUNT_TABLES = ("main_event", "main_deployment")


async def refresh_capture_detections(
    conn: AsyncConnection[Any], project_id: int, image_ids: list[int]
) -> None:
    """Antenna's SourceImage.save() for these captures: detections_count (and a missing
    project_id from the station)."""
    if image_ids:
        await conn.execute(_CAPTURES, {"project": project_id, "images": image_ids})
        cachalot.wrote("main_sourceimage")


async def refresh_job_counts(conn: AsyncConnection[Any], job_id: int, project_id: int) -> None:
    """The sessions' and stations' cached counts, for those the job's captures belong to."""
    params = {"job": job_id, "project": project_id}
    await conn.execute(_EVENTS, params)
    await conn.execute(_DEPLOYMENTS, params)
    cachalot.wrote(*JOB_COUNT_TABLES)
