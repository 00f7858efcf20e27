"""Demo and test data, as Antenna rows: a project with a station, a session and N captures in a
capture set, and a fake pipeline (a detector and a classifier with its category map) enabled for
the project. Set-based: one statement per table, whatever N.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from antenna_db.processing_services import add_push_service
from antenna_db.registration import DEFAULT_STAGES
from core.job_requests import NewMlJob

DETECTOR_KEY = "fake-detector"
CLASSIFIER_KEY = "fake-classifier"
CLASSIFIER_LABELS = ["Noctuidae", "Geometridae", "Erebidae", "Crambidae", "Tortricidae"]
CLASSIFIER_RANK = "FAMILY"


class SeedResult(BaseModel):
    project_id: int
    pipeline_slug: str
    collection_id: int
    deployment_id: int = 0
    pipeline_id: int = 0

    def ml_job(self, **fields: Any) -> NewMlJob:
        """An ML job of the seeded pipeline on the seeded collection (``fields``: the rest)."""
        return NewMlJob(
            project_id=self.project_id,
            pipeline_slug=self.pipeline_slug,
            collection_id=self.collection_id,
            **fields,
        )


def feature_flags(async_workers: bool) -> dict[str, bool]:
    """Antenna's ProjectFeatureFlags with every key present."""
    return {
        "tags": False,
        "default_filters": False,
        "reprocess_all_images": False,
        "async_pipeline_workers": async_workers,
        "reprocess_existing_detections": False,
    }


async def _algorithm(
    conn: AsyncConnection[Any], key: str, name: str, task_type: str, category_map: int | None
) -> int:
    cur = await conn.execute("SELECT id FROM ml_algorithm WHERE key = %s", (key,))
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "INSERT INTO ml_algorithm (created_at, updated_at, name, key, description, version,"
            " version_name, category_map_id, task_type, uri)"
            " VALUES (now(), now(), %s, %s, '', 1, '1', %s, %s, NULL)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (name, key, category_map, task_type),
        )
        row = await cur.fetchone()
        if row is None:  # created meanwhile by another seed
            cur = await conn.execute("SELECT id FROM ml_algorithm WHERE key = %s", (key,))
            row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def ensure_algorithms(conn: AsyncConnection[Any]) -> tuple[int, int]:
    """The fake pipeline's detector and classifier (the keys the fake worker reports)."""
    detector = await _algorithm(conn, DETECTOR_KEY, "Fake Detector", "localization", None)
    cur = await conn.execute(
        "SELECT category_map_id FROM ml_algorithm WHERE key = %s", (CLASSIFIER_KEY,)
    )
    row = await cur.fetchone()
    category_map = row["category_map_id"] if row else None
    if category_map is None:
        data = [
            {"index": i, "label": label, "taxon_rank": CLASSIFIER_RANK}
            for i, label in enumerate(CLASSIFIER_LABELS)
        ]
        cur = await conn.execute(
            "INSERT INTO ml_algorithmcategorymap (created_at, updated_at, data, labels, version,"
            " description, labels_hash, uri) VALUES (now(), now(), %s::jsonb, %s::varchar[],"
            " 'v1', NULL, NULL, NULL) RETURNING id",
            (json.dumps(data), CLASSIFIER_LABELS),
        )
        made = await cur.fetchone()
        assert made is not None
        category_map = made["id"]
    classifier = await _algorithm(
        conn, CLASSIFIER_KEY, "Fake Classifier", "classification", category_map
    )
    return detector, classifier


async def new_capture_set(conn: AsyncConnection[Any], project_id: int, name: str) -> int:
    """A new empty capture set of the project (``manual``, as Antenna's UI makes one), for demo
    and test rows; its id."""
    cur = await conn.execute(
        "INSERT INTO main_sourceimagecollection (created_at, updated_at, name, description,"
        " method, kwargs, project_id) VALUES (now(), now(), %s, '', 'manual', '{}'::jsonb, %s)"
        " RETURNING id",
        (name, project_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def add_service(conn: AsyncConnection[Any], seeded: SeedResult, url: str, label: str) -> None:
    """A push-mode processing service at ``url`` for the seeded project and pipeline, named
    ``label`` and the pipeline's slug."""
    await add_push_service(
        conn,
        name=f"{label} {seeded.pipeline_slug}",
        endpoint_url=url,
        project_id=seeded.project_id,
        pipeline_slugs=[seeded.pipeline_slug],
    )


async def seed(
    conn: AsyncConnection[Any],
    images: int,
    *,
    pipeline_slug: str | None = None,
    async_workers: bool = True,
    image_url_base: str = "https://example.org/captures",
) -> SeedResult:
    """Create everything one ML job needs, with ``images`` captures."""
    slug = pipeline_slug or f"fake-pipeline-{uuid.uuid4().hex[:8]}"
    async with conn.transaction():
        detector_id, classifier_id = await ensure_algorithms(conn)
        cur = await conn.execute(
            "INSERT INTO main_project (created_at, updated_at, name, description, image, active,"
            " priority, owner_id, feature_flags, default_filters_score_threshold,"
            " default_processing_pipeline_id, session_time_gap_seconds, draft)"
            " VALUES (now(), now(), %s, '', '', true, 1, NULL, %s::jsonb, 0.5, NULL, 7200, false)"
            " RETURNING id",
            (f"Demo {slug}"[:80], json.dumps(feature_flags(async_workers))),
        )
        project_id = int((await cur.fetchone() or {})["id"])
        cur = await conn.execute(
            "INSERT INTO ml_pipeline (created_at, updated_at, name, slug, description, version,"
            " version_name, stages, default_config)"
            " VALUES (now(), now(), %s, %s, 'Synthetic detector and classifier', 1, '',"
            " %s::jsonb, '{}'::jsonb)"
            " ON CONFLICT (slug) DO UPDATE SET updated_at = now() RETURNING id",
            (f"Fake pipeline {slug}", slug, json.dumps(DEFAULT_STAGES)),
        )
        pipeline_id = int((await cur.fetchone() or {})["id"])
        await conn.execute(
            "INSERT INTO ml_pipeline_algorithms (pipeline_id, algorithm_id)"
            " VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING",
            (pipeline_id, detector_id, pipeline_id, classifier_id),
        )
        await conn.execute(
            "INSERT INTO ml_projectpipelineconfig (created_at, updated_at, enabled, config,"
            " pipeline_id, project_id) VALUES (now(), now(), true, '{}'::jsonb, %s, %s)",
            (pipeline_id, project_id),
        )
        cur = await conn.execute(
            "INSERT INTO main_deployment (created_at, updated_at, name, description, project_id,"
            " image) VALUES (now(), now(), 'Trap 1', '', %s, '') RETURNING id",
            (project_id,),
        )
        deployment_id = int((await cur.fetchone() or {})["id"])
        cur = await conn.execute(
            'INSERT INTO main_event (created_at, updated_at, group_by, start, "end",'
            " deployment_id, project_id) VALUES (now(), now(), '2026-06-01',"
            " timestamptz '2026-06-01 22:00+00', timestamptz '2026-06-01 22:00+00'"
            " + %s * interval '1 minute', %s, %s) RETURNING id",
            (images, deployment_id, project_id),
        )
        event_id = int((await cur.fetchone() or {})["id"])
        collection_id = await new_capture_set(conn, project_id, f"{images} captures")
        await conn.execute(
            "WITH new_images AS ("
            " INSERT INTO main_sourceimage (created_at, updated_at, path, public_base_url,"
            '  "timestamp", test_image, deployment_id, event_id, project_id)'
            " SELECT now(), now(), %(dep)s || '/' || g || '.jpg', %(base)s || '/',"
            "        timestamptz '2026-06-01 22:00+00' + g * interval '1 minute', false,"
            "        %(dep)s, %(event)s, %(project)s"
            " FROM generate_series(1, %(n)s) AS g RETURNING id)"
            " INSERT INTO main_sourceimagecollection_images"
            " (sourceimagecollection_id, sourceimage_id)"
            " SELECT %(collection)s, id FROM new_images",
            {
                "dep": deployment_id,
                "base": image_url_base.rstrip("/"),
                "event": event_id,
                "project": project_id,
                "n": images,
                "collection": collection_id,
            },
        )
    return SeedResult(
        project_id=project_id,
        pipeline_slug=slug,
        collection_id=collection_id,
        deployment_id=deployment_id,
        pipeline_id=pipeline_id,
    )
