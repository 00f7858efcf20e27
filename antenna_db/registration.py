"""Registering a pull-mode processing service's pipelines with a project, as Antenna's
``ProjectPipelineViewSet.create`` does (reference/antenna-db.md section 6), in one transaction.

Idempotent (a worker re-registers at every start). Unlike Antenna, a request can never change
what another project uses: a pipeline already enabled in a project the caller may not manage
keeps its algorithms, and an algorithm such a pipeline uses keeps its task type, URI and
category map; the response says what was left alone. Values Antenna's schema cannot hold
(a key used by another version, a name taken by another key) are refused with the field named,
never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from antenna_db import cachalot
from antenna_db.processing_services import SERVICE_TABLES, link
from core.errors import InvalidJobInput
from core.schemas import (
    AlgorithmConfigResponse,
    AsyncPipelineRegistrationRequest,
    PipelineConfigResponse,
    PipelineRegistrationResponse,
)

# Antenna's default stages of a new pipeline (the request's stages are ignored, as there).
DEFAULT_STAGES = [
    {
        "key": "default",
        "name": "Default Stage",
        "params": [
            {"key": "default", "name": "Placeholder", "value": 0, "category": "placeholder"}
        ],
    }
]
CLASSIFIER_TASK_TYPES = ("classification", "tagging")
REGISTRATION_TABLES = (
    *SERVICE_TABLES,
    "ml_pipeline",
    "ml_projectpipelineconfig",
    "ml_pipeline_algorithms",
    "ml_algorithm",
    "ml_algorithmcategorymap",
)
MayManage = Callable[[list[int]], Awaitable[bool]]


async def _service(conn: AsyncConnection[Any], name: str) -> int:
    """Antenna's get_or_create by name only (names are not unique: the first one)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"service:{name}",))
    cur = await conn.execute(
        "SELECT id FROM ml_processingservice WHERE name = %s ORDER BY id LIMIT 1", (name,)
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "INSERT INTO ml_processingservice (created_at, updated_at, name, description,"
            " endpoint_url, last_seen, last_seen_live, last_seen_latency)"
            " VALUES (now(), now(), %s, '', NULL, NULL, NULL, NULL) RETURNING id",
            (name,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def _pipeline(conn: AsyncConnection[Any], config: PipelineConfigResponse) -> tuple[int, bool]:
    """(id, created): the pipeline of this slug or this (name, version), else a new one."""
    cur = await conn.execute(
        "SELECT id FROM ml_pipeline WHERE slug = %(slug)s OR (name = %(name)s AND version = %(v)s)"
        " ORDER BY (name = %(name)s AND version = %(v)s) DESC, id LIMIT 1",
        {"slug": config.slug, "name": config.name, "v": config.version},
    )
    row = await cur.fetchone()
    if row is not None:
        await conn.execute("UPDATE ml_pipeline SET updated_at = now() WHERE id = %s", (row["id"],))
        return int(row["id"]), False
    cur = await conn.execute(
        "INSERT INTO ml_pipeline (created_at, updated_at, name, slug, description, version,"
        " version_name, stages, default_config)"
        " VALUES (now(), now(), %s, %s, %s, %s, '', %s::jsonb, '{}'::jsonb) RETURNING id",
        (
            config.name,
            config.slug,
            config.description or "",
            config.version,
            json.dumps(DEFAULT_STAGES),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"]), True


async def _enable(conn: AsyncConnection[Any], pipeline_id: int, project_id: int) -> bool:
    """get_or_create of the project's config; an existing (even disabled) one is left alone."""
    cur = await conn.execute(
        "INSERT INTO ml_projectpipelineconfig (created_at, updated_at, enabled, config,"
        " pipeline_id, project_id) VALUES (now(), now(), true, '{}'::jsonb, %s, %s)"
        " ON CONFLICT (pipeline_id, project_id) DO NOTHING",
        (pipeline_id, project_id),
    )
    return cur.rowcount == 1


async def _other_projects(
    conn: AsyncConnection[Any], pipeline_ids: list[int], project_id: int
) -> list[int]:
    cur = await conn.execute(
        "SELECT DISTINCT project_id FROM ml_projectpipelineconfig"
        " WHERE pipeline_id = ANY(%s::bigint[]) AND project_id <> %s",
        (pipeline_ids, project_id),
    )
    return [int(r["project_id"]) for r in await cur.fetchall()]


async def _category_map(conn: AsyncConnection[Any], algorithm: AlgorithmConfigResponse) -> int:
    cm = algorithm.category_map
    assert cm is not None
    cur = await conn.execute(
        "INSERT INTO ml_algorithmcategorymap (created_at, updated_at, data, labels, version,"
        " description, labels_hash, uri) VALUES (now(), now(), %s::jsonb, %s::varchar[], %s,"
        " %s, NULL, %s) RETURNING id",
        (json.dumps(cm.data), cm.labels, cm.version, cm.description, cm.uri),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def _algorithm(
    conn: AsyncConnection[Any],
    algorithm: AlgorithmConfigResponse,
    field: str,
    may_change: bool,
) -> tuple[int, bool]:
    """(id, created): get_or_create by (key, version); fills a missing category map and
    updates task type and URI, unless another project's pipeline uses it."""
    classifier = (algorithm.task_type or "") in CLASSIFIER_TASK_TYPES
    has_map = algorithm.category_map is not None and bool(
        algorithm.category_map.data or algorithm.category_map.labels
    )
    cur = await conn.execute(
        "SELECT a.id, a.key, a.version, a.name, a.category_map_id,"
        " coalesce(jsonb_array_length(cm.data) > 0 OR cardinality(cm.labels) > 0, false)"
        " AS valid_map"
        " FROM ml_algorithm a LEFT JOIN ml_algorithmcategorymap cm ON cm.id = a.category_map_id"
        " WHERE a.key = %s OR (a.name = %s AND a.version = %s) ORDER BY a.id",
        (algorithm.key, algorithm.name, algorithm.version),
    )
    rows = list(await cur.fetchall())
    same = next(
        (r for r in rows if r["key"] == algorithm.key and r["version"] == algorithm.version), None
    )
    if same is None and rows:
        clash = rows[0]
        if clash["key"] == algorithm.key:
            raise InvalidJobInput(
                f"{field}.version",
                f"algorithm {algorithm.key!r} is registered with version {clash['version']}",
            )
        raise InvalidJobInput(
            f"{field}.name",
            f"{algorithm.name!r} version {algorithm.version} is registered with key"
            f" {clash['key']!r}",
        )
    if same is None:
        if classifier and not has_map:
            raise InvalidJobInput(
                f"{field}.category_map", f"a {algorithm.task_type} algorithm needs a category map"
            )
        map_id = await _category_map(conn, algorithm) if has_map else None
        cur = await conn.execute(
            "INSERT INTO ml_algorithm (created_at, updated_at, name, key, description, version,"
            " version_name, category_map_id, task_type, uri)"
            " VALUES (now(), now(), %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                algorithm.name,
                algorithm.key,
                algorithm.description or "",
                algorithm.version,
                algorithm.version_name or str(algorithm.version),
                map_id,
                algorithm.task_type,
                algorithm.uri,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row["id"]), True
    algorithm_id = int(same["id"])
    if not may_change:
        return algorithm_id, False
    if not same["valid_map"]:
        if has_map:
            await conn.execute(
                "UPDATE ml_algorithm SET category_map_id = %s, updated_at = now() WHERE id = %s",
                (await _category_map(conn, algorithm), algorithm_id),
            )
        elif classifier:
            raise InvalidJobInput(
                f"{field}.category_map", f"a {algorithm.task_type} algorithm needs a category map"
            )
    await conn.execute(
        "UPDATE ml_algorithm SET task_type = %s, uri = %s, updated_at = now()"
        " WHERE id = %s AND (task_type IS DISTINCT FROM %s OR uri IS DISTINCT FROM %s)",
        (algorithm.task_type, algorithm.uri, algorithm_id, algorithm.task_type, algorithm.uri),
    )
    return algorithm_id, False


async def register(
    conn: AsyncConnection[Any],
    project_id: int,
    request: AsyncPipelineRegistrationRequest,
    may_manage: MayManage,
) -> PipelineRegistrationResponse:
    """``may_manage(project_ids)``: may the caller change what those projects use."""
    left_alone: list[str] = []
    created: list[str] = []
    algorithms_created: list[str] = []
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM main_project WHERE id = %s", (project_id,))
        if await cur.fetchone() is None:
            raise InvalidJobInput("project", f"project {project_id} does not exist")
        service_id = await _service(conn, request.processing_service_name)
        pipeline_ids: list[int] = []
        for i, config in enumerate(request.pipelines):
            pipeline_id, new = await _pipeline(conn, config)
            pipeline_ids.append(pipeline_id)
            if new:
                created.append(config.slug)
            await _enable(conn, pipeline_id, project_id)
            others = await _other_projects(conn, [pipeline_id], project_id)
            may_change = new or not others or await may_manage(others)
            if not may_change:
                left_alone.append(config.slug)
            for j, algorithm in enumerate(config.algorithms):
                algorithm_id, new_algorithm = await _algorithm(
                    conn, algorithm, f"pipelines[{i}].algorithms[{j}]", may_change
                )
                if new_algorithm:
                    algorithms_created.append(algorithm.key)
                if may_change:
                    await conn.execute(
                        "INSERT INTO ml_pipeline_algorithms (pipeline_id, algorithm_id)"
                        " VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (pipeline_id, algorithm_id),
                    )
        await link(conn, service_id, project_id, pipeline_ids)
    await conn.execute(
        "UPDATE ml_processingservice SET last_seen = now(), last_seen_live = true WHERE id = %s",
        (service_id,),
    )
    cachalot.wrote(*REGISTRATION_TABLES)
    error = None
    if left_alone:
        error = (
            f"pipelines {', '.join(left_alone)} are used by projects you cannot manage: linked"
            " to this project, their algorithms left as they are"
        )
    return PipelineRegistrationResponse(
        timestamp=datetime.now(UTC),
        success=True,
        error=error,
        pipelines=[p.slug for p in request.pipelines],
        pipelines_created=created,
        algorithms_created=sorted(set(algorithms_created), key=algorithms_created.index),
        processing_service_id=service_id,
    )
