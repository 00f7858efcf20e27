"""Demo and test data: a project, a pipeline with its algorithms, a collection of N images."""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

DETECTOR_KEY = "fake-detector"
CLASSIFIER_KEY = "fake-classifier"
CLASSIFIER_LABELS = ["Noctuidae", "Geometridae", "Erebidae", "Crambidae", "Tortricidae"]


class SeedResult(BaseModel):
    project_id: int
    pipeline_slug: str
    collection_id: int


async def ensure_algorithms(conn: AsyncConnection[Any]) -> tuple[int, int]:
    """The fake pipeline's detector and classifier (same keys the fake worker reports)."""
    ids = []
    for key, name, task_type, category_map in (
        (DETECTOR_KEY, "Fake Detector", "localization", None),
        (
            CLASSIFIER_KEY,
            "Fake Classifier",
            "classification",
            {"labels": CLASSIFIER_LABELS, "data": []},
        ),
    ):
        cur = await conn.execute(
            "INSERT INTO algorithms (key, name, task_type, category_map)"
            " VALUES (%s, %s, %s, %s::jsonb)"
            " ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (key, name, task_type, json.dumps(category_map) if category_map else None),
        )
        row = await cur.fetchone()
        assert row is not None
        ids.append(int(row["id"]))
    return ids[0], ids[1]


async def seed(
    conn: AsyncConnection[Any],
    images: int,
    *,
    pipeline_slug: str | None = None,
    async_workers: bool = True,
    image_url_base: str = "https://example.org/captures",
) -> SeedResult:
    """Create everything one ML job needs, with ``images`` images, set-based (no per-row trips)."""
    slug = pipeline_slug or f"fake-pipeline-{uuid.uuid4().hex[:8]}"
    async with conn.transaction():
        detector_id, classifier_id = await ensure_algorithms(conn)
        cur = await conn.execute(
            "INSERT INTO projects (name, async_pipeline_workers) VALUES (%s, %s) RETURNING id",
            (f"Demo project {slug}", async_workers),
        )
        project_id = int((await cur.fetchone() or {})["id"])
        cur = await conn.execute(
            "INSERT INTO pipelines (slug, name, description) VALUES (%s, %s, %s)"
            " ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (slug, f"Fake pipeline {slug}", "Synthetic detector and classifier"),
        )
        pipeline_id = int((await cur.fetchone() or {})["id"])
        await conn.execute(
            "INSERT INTO pipeline_algorithms (pipeline_id, algorithm_id)"
            " VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING",
            (pipeline_id, detector_id, pipeline_id, classifier_id),
        )
        await conn.execute(
            "INSERT INTO project_pipelines (project_id, pipeline_id) VALUES (%s, %s)",
            (project_id, pipeline_id),
        )
        cur = await conn.execute(
            "INSERT INTO deployments (project_id, name) VALUES (%s, 'Trap 1') RETURNING id",
            (project_id,),
        )
        deployment_id = int((await cur.fetchone() or {})["id"])
        cur = await conn.execute(
            "INSERT INTO collections (project_id, name) VALUES (%s, %s) RETURNING id",
            (project_id, f"{images} captures"),
        )
        collection_id = int((await cur.fetchone() or {})["id"])
        await conn.execute(
            "WITH new_images AS ("
            " INSERT INTO source_images (project_id, deployment_id, url, timestamp)"
            " SELECT %s, %s, %s || '/' || %s || '/' || g || '.jpg',"
            "        timestamptz '2026-06-01 22:00+00' + g * interval '1 minute'"
            " FROM generate_series(1, %s) AS g RETURNING id)"
            " INSERT INTO collection_images (collection_id, source_image_id)"
            " SELECT %s, id FROM new_images",
            (project_id, deployment_id, image_url_base, deployment_id, images, collection_id),
        )
    return SeedResult(project_id=project_id, pipeline_slug=slug, collection_id=collection_id)
