"""Pipelines as a job uses them: ``ml_pipeline``, its algorithms and their category maps, and the
project's pipeline config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

DETECTOR_TASK_TYPES = frozenset({"detection", "localization", "segmentation"})
# SYNC_API: images per /process request, from the pipeline config (Antenna's default 1).
BATCH_SIZE_KEY = "request_source_image_batch_size"

_ALGORITHMS = """
SELECT p.id AS pipeline_id, p.slug, a.id, a.key, a.name, a.task_type, a.category_map_id,
       cm.data AS category_data
FROM jobs_job j JOIN ml_pipeline p ON p.id = j.pipeline_id
LEFT JOIN ml_pipeline_algorithms pa ON pa.pipeline_id = p.id
LEFT JOIN ml_algorithm a ON a.id = pa.algorithm_id
LEFT JOIN ml_algorithmcategorymap cm ON cm.id = a.category_map_id
WHERE j.id = %s ORDER BY a.id
"""
# Antenna's Pipeline.get_config: the pipeline's default config, overridden by the project's.
_CONFIG = """
SELECT p.default_config || coalesce(ppc.config, '{}'::jsonb) AS config
FROM jobs_job j JOIN ml_pipeline p ON p.id = j.pipeline_id
LEFT JOIN ml_projectpipelineconfig ppc ON ppc.pipeline_id = p.id AND ppc.project_id = j.project_id
WHERE j.id = %s
"""


@dataclass(frozen=True)
class Algorithm:
    id: int
    key: str
    name: str
    task_type: str | None
    category_map_id: int | None
    # The category map's data, in model output order (position = score index).
    categories: tuple[dict[str, Any], ...] = ()

    @property
    def is_detector(self) -> bool:
        return self.task_type in DETECTOR_TASK_TYPES


@dataclass(frozen=True)
class PipelineContext:
    """The job's pipeline: which algorithm keys a result may name, and its detector."""

    slug: str
    algorithms: dict[str, Algorithm] = field(default_factory=dict)
    id: int | None = None

    @property
    def detectors(self) -> list[Algorithm]:
        return [a for a in self.algorithms.values() if a.is_detector]

    @property
    def detector_id(self) -> int | None:
        """The one detection algorithm (Antenna requires exactly one): null markers use it."""
        found = self.detectors
        return found[0].id if len(found) == 1 else None

    def by_id(self, algorithm_id: int) -> Algorithm | None:
        return next((a for a in self.algorithms.values() if a.id == algorithm_id), None)

    def name_of(self, algorithm_id: int) -> str:
        found = self.by_id(algorithm_id)
        return found.name if found else str(algorithm_id)

    def category_map_of(self, algorithm_id: int) -> int | None:
        found = self.by_id(algorithm_id)
        return found.category_map_id if found else None

    def rank_at(self, algorithm_id: int, index: int | None) -> str:
        """The taxon rank the category map gives the category at ``index``, else UNKNOWN."""
        found = self.by_id(algorithm_id)
        if found is None or index is None or not 0 <= index < len(found.categories):
            return "UNKNOWN"
        entry = found.categories[index]
        rank = entry.get("taxon_rank") if isinstance(entry, dict) else None
        return rank.upper() if isinstance(rank, str) and rank else "UNKNOWN"


async def load(conn: AsyncConnection[Any], job_id: int) -> PipelineContext:
    cur = await conn.execute(_ALGORITHMS, (job_id,))
    rows = await cur.fetchall()
    if not rows:
        return PipelineContext(slug="")
    algorithms = {
        r["key"]: Algorithm(
            id=r["id"],
            key=r["key"],
            name=r["name"],
            task_type=r["task_type"],
            category_map_id=r["category_map_id"],
            categories=tuple(r["category_data"]) if isinstance(r["category_data"], list) else (),
        )
        for r in rows
        if r["id"] is not None
    }
    return PipelineContext(slug=rows[0]["slug"], algorithms=algorithms, id=rows[0]["pipeline_id"])


async def job_config(conn: AsyncConnection[Any], job_id: int) -> dict[str, Any]:
    cur = await conn.execute(_CONFIG, (job_id,))
    row = await cur.fetchone()
    config = row["config"] if row else None
    return dict(config) if isinstance(config, dict) else {}


async def existing_slugs(conn: AsyncConnection[Any], slugs: list[str]) -> list[str]:
    """Those of ``slugs`` that name a pipeline."""
    cur = await conn.execute("SELECT slug FROM ml_pipeline WHERE slug = ANY(%s)", (slugs,))
    return [r["slug"] for r in await cur.fetchall()]


async def slug_of(conn: AsyncConnection[Any], pipeline_id: int | None) -> str | None:
    if pipeline_id is None:
        return None
    cur = await conn.execute("SELECT slug FROM ml_pipeline WHERE id = %s", (pipeline_id,))
    row = await cur.fetchone()
    return str(row["slug"]) if row else None


async def set_default_config(conn: AsyncConnection[Any], slug: str, key: str, value: Any) -> None:
    """One key of the pipeline's default request config (e.g. the SYNC_API batch size)."""
    await conn.execute(
        "UPDATE ml_pipeline SET default_config = default_config || jsonb_build_object(%s::text,"
        " %s::jsonb), updated_at = now() WHERE slug = %s",
        (key, json.dumps(value), slug),
    )
