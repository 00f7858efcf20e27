"""Registering a pull-mode processing service's pipelines with a project (antenna#1076).

Idempotent: a worker re-registers at every start, so every write is an upsert or a link that
ignores an existing row. Set-based: one statement per table, whatever the number of pipelines.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from core.errors import InvalidJobInput
from core.schemas import (
    AlgorithmConfigResponse,
    AsyncPipelineRegistrationRequest,
    PipelineRegistrationResponse,
)


async def register(
    conn: AsyncConnection[Any], project_id: int, request: AsyncPipelineRegistrationRequest
) -> PipelineRegistrationResponse:
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM projects WHERE id = %s", (project_id,))
        if await cur.fetchone() is None:
            raise InvalidJobInput("project", f"project {project_id} does not exist")
        service_id = await _service(conn, request.processing_service_name)
        await conn.execute(
            "INSERT INTO processing_service_projects (processing_service_id, project_id)"
            " VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (service_id, project_id),
        )
        algorithms = _unique_algorithms(request)
        algorithm_ids, algorithms_created = await _upsert_algorithms(conn, algorithms)
        pipeline_ids, pipelines_created = await _upsert_pipelines(conn, request)
        links = [
            (pipeline_ids[p.slug], algorithm_ids[a.key])
            for p in request.pipelines
            for a in p.algorithms
        ]
        await conn.execute(
            "INSERT INTO pipeline_algorithms (pipeline_id, algorithm_id)"
            " SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
            ([p for p, _ in links], [a for _, a in links]),
        )
        ids = list(pipeline_ids.values())
        await conn.execute(
            "INSERT INTO processing_service_pipelines (processing_service_id, pipeline_id)"
            " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
            (service_id, ids),
        )
        await conn.execute(
            "INSERT INTO project_pipelines (project_id, pipeline_id)"
            " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
            (project_id, ids),
        )
        await conn.execute(
            "UPDATE processing_services SET last_seen = now(), last_seen_live = true WHERE id = %s",
            (service_id,),
        )
    return PipelineRegistrationResponse(
        timestamp=datetime.now(UTC),
        success=True,
        pipelines=list(pipeline_ids),
        pipelines_created=pipelines_created,
        algorithms_created=algorithms_created,
        processing_service_id=service_id,
    )


async def _service(conn: AsyncConnection[Any], name: str) -> int:
    # DO UPDATE (a no-op) rather than DO NOTHING so RETURNING also yields an existing row.
    cur = await conn.execute(
        "INSERT INTO processing_services (name, endpoint_url) VALUES (%s, NULL)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        (name,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


def _unique_algorithms(
    request: AsyncPipelineRegistrationRequest,
) -> dict[str, AlgorithmConfigResponse]:
    """One row per key: ON CONFLICT cannot touch the same row twice in one statement."""
    found: dict[str, AlgorithmConfigResponse] = {}
    for pipeline in request.pipelines:
        for algorithm in pipeline.algorithms:
            found.setdefault(algorithm.key, algorithm)
    return found


async def _upsert_algorithms(
    conn: AsyncConnection[Any], algorithms: dict[str, AlgorithmConfigResponse]
) -> tuple[dict[str, int], list[str]]:
    if not algorithms:
        return {}, []
    items = list(algorithms.values())
    cur = await conn.execute(
        "INSERT INTO algorithms (key, name, task_type, version, description, category_map)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::text[],"
        "                      %s::jsonb[])"
        " ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name,"
        "  task_type = EXCLUDED.task_type, version = EXCLUDED.version,"
        "  description = EXCLUDED.description,"
        "  category_map = COALESCE(EXCLUDED.category_map, algorithms.category_map)"
        " RETURNING id, key, (xmax = 0) AS created",
        (
            [a.key for a in items],
            [a.name for a in items],
            [a.task_type or "detection" for a in items],
            [a.version for a in items],
            [a.description or "" for a in items],
            [
                json.dumps(a.category_map.model_dump(mode="json")) if a.category_map else None
                for a in items
            ],
        ),
    )
    rows = await cur.fetchall()
    return {r["key"]: int(r["id"]) for r in rows}, [r["key"] for r in rows if r["created"]]


async def _upsert_pipelines(
    conn: AsyncConnection[Any], request: AsyncPipelineRegistrationRequest
) -> tuple[dict[str, int], list[str]]:
    unique = {p.slug: p for p in request.pipelines}
    if not unique:
        return {}, []
    items = list(unique.values())
    cur = await conn.execute(
        "INSERT INTO pipelines (slug, name, version, description)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[])"
        " ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version,"
        "  description = EXCLUDED.description"
        " RETURNING id, slug, (xmax = 0) AS created",
        (
            [p.slug for p in items],
            [p.name for p in items],
            [p.version for p in items],
            [p.description or "" for p in items],
        ),
    )
    rows = await cur.fetchall()
    ids = {r["slug"]: int(r["id"]) for r in rows}
    return {p.slug: ids[p.slug] for p in items}, [r["slug"] for r in rows if r["created"]]
