"""Registering a pull-mode processing service's pipelines with a project, as Antenna's
``ProjectPipelineViewSet.create`` does (docs/antenna-db.md section 5), in one transaction.

Idempotent (a worker re-registers at every start). Unlike Antenna, a request never changes what
another project uses, and links only the caller's project:

- a pipeline used by a project the caller may not manage (enabled there, or run by its jobs) is
  linked to the caller's project as it is; a registration that would add an algorithm to it is
  refused (400 naming the algorithm's ``key``): its slug is unique, so the caller registers its
  own pipeline under another slug;
- an algorithm of such a pipeline keeps its task type, URI and category map; a registration
  naming its key with others is refused (400 naming ``task_type``, ``uri`` or
  ``category_map``): keys are unique, so there is no second version of it to make;
- a processing service is found by name among the pull services linked to no project the caller
  may not manage; if every one of that name serves such a project, the caller gets a service of
  its own under the same name (names are not unique in Antenna). Only that service is linked
  and marked live.

Values Antenna's schema cannot hold or that make no sense (registration_checks.py), a key used
by another version, a name taken by another key are refused with the field named, never a 500.
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


async def _service(
    conn: AsyncConnection[Any], name: str, project_id: int, may_manage: MayManage
) -> int:
    """The pull service of this name the caller may link and mark live (Antenna's get_or_create
    by name, among the services that serve no project the caller may not manage), else a new
    one of that name."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"service:{name}",))
    cur = await conn.execute(
        "SELECT s.id, coalesce(array_agg(sp.project_id) FILTER (WHERE sp.project_id <> %(project)s"
        " AND sp.project_id IS NOT NULL), '{}') AS others"
        " FROM ml_processingservice s"
        " LEFT JOIN ml_processingservice_projects sp ON sp.processingservice_id = s.id"
        " WHERE s.name = %(name)s AND s.endpoint_url IS NULL GROUP BY s.id ORDER BY s.id",
        {"name": name, "project": project_id},
    )
    for row in await cur.fetchall():
        others = [int(p) for p in row["others"]]
        if not others or await may_manage(others):
            return int(row["id"])
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
    """Projects other than ``project_id`` that use these pipelines: enabled there, or run by
    their jobs."""
    cur = await conn.execute(
        "SELECT project_id FROM ml_projectpipelineconfig"
        " WHERE pipeline_id = ANY(%(pipelines)s::bigint[]) AND project_id <> %(project)s"
        " UNION SELECT project_id FROM jobs_job"
        " WHERE pipeline_id = ANY(%(pipelines)s::bigint[]) AND project_id <> %(project)s",
        {"pipelines": pipeline_ids, "project": project_id},
    )
    return sorted(int(r["project_id"]) for r in await cur.fetchall())


async def _algorithm_users(
    conn: AsyncConnection[Any], algorithm_id: int, project_id: int
) -> list[int]:
    """Projects other than ``project_id`` that use a pipeline of this algorithm."""
    cur = await conn.execute(
        "SELECT pipeline_id FROM ml_pipeline_algorithms WHERE algorithm_id = %s", (algorithm_id,)
    )
    pipelines = [int(r["pipeline_id"]) for r in await cur.fetchall()]
    return await _other_projects(conn, pipelines, project_id) if pipelines else []


def _used_elsewhere(field: str, what: str, projects: list[int], fix: str) -> InvalidJobInput:
    shown = ", ".join(str(p) for p in projects[:5]) + (", ..." if len(projects) > 5 else "")
    return InvalidJobInput(field, f"{what} is used by projects you cannot manage ({shown}): {fix}")


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
    project_id: int,
    may_manage: MayManage,
) -> tuple[int, bool]:
    """(id, created): get_or_create by (key, version); fills a missing category map and
    updates task type and URI, unless another project the caller may not manage uses it (then
    a difference is refused, naming the field)."""
    classifier = (algorithm.task_type or "") in CLASSIFIER_TASK_TYPES
    has_map = algorithm.category_map is not None and bool(
        algorithm.category_map.data or algorithm.category_map.labels
    )
    cur = await conn.execute(
        "SELECT a.id, a.key, a.version, a.name, a.category_map_id, a.task_type, a.uri,"
        " coalesce(jsonb_array_length(cm.data) > 0 OR cardinality(cm.labels) > 0, false)"
        " AS valid_map"
        " FROM ml_algorithm a LEFT JOIN ml_algorithmcategorymap cm ON cm.id = a.category_map_id"
        " WHERE a.key = %s OR (a.name = %s AND a.version = %s) ORDER BY a.id FOR UPDATE OF a",
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
    fills_map = not same["valid_map"] and has_map
    if not same["valid_map"] and not has_map and classifier:
        raise InvalidJobInput(
            f"{field}.category_map", f"a {algorithm.task_type} algorithm needs a category map"
        )
    changes = [
        name
        for name, differs in (
            ("task_type", same["task_type"] != algorithm.task_type),
            ("uri", same["uri"] != algorithm.uri),
            ("category_map", fills_map),
        )
        if differs
    ]
    if not changes:
        return algorithm_id, False
    others = await _algorithm_users(conn, algorithm_id, project_id)
    if others and not await may_manage(others):
        name = changes[0]
        now = {"task_type": same["task_type"], "uri": same["uri"], "category_map": None}[name]
        raise _used_elsewhere(
            f"{field}.{name}",
            f"algorithm {algorithm.key!r} (its {name} is {now!r})",
            others,
            "register it with the same values, or under a key of your own",
        )
    if fills_map:
        await conn.execute(
            "UPDATE ml_algorithm SET category_map_id = %s, updated_at = now() WHERE id = %s",
            (await _category_map(conn, algorithm), algorithm_id),
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
    created: list[str] = []
    algorithms_created: list[str] = []
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM main_project WHERE id = %s", (project_id,))
        if await cur.fetchone() is None:
            raise InvalidJobInput("project", f"project {project_id} does not exist")
        service_id = await _service(conn, request.processing_service_name, project_id, may_manage)
        pipeline_ids: list[int] = []
        for i, config in enumerate(request.pipelines):
            pipeline_id, new = await _pipeline(conn, config)
            pipeline_ids.append(pipeline_id)
            if new:
                created.append(config.slug)
            await _enable(conn, pipeline_id, project_id)
            cur = await conn.execute(
                "SELECT algorithm_id FROM ml_pipeline_algorithms WHERE pipeline_id = %s",
                (pipeline_id,),
            )
            linked = {int(r["algorithm_id"]) for r in await cur.fetchall()}
            for j, algorithm in enumerate(config.algorithms):
                field = f"pipelines[{i}].algorithms[{j}]"
                algorithm_id, new_algorithm = await _algorithm(
                    conn, algorithm, field, project_id, may_manage
                )
                if new_algorithm:
                    algorithms_created.append(algorithm.key)
                if algorithm_id in linked:
                    continue
                others = [] if new else await _other_projects(conn, [pipeline_id], project_id)
                if others and not await may_manage(others):
                    raise _used_elsewhere(
                        f"{field}.key",
                        f"pipeline {config.slug!r}, which has no algorithm {algorithm.key!r},",
                        others,
                        "register its algorithms as they are, or your pipeline under a slug"
                        " of your own",
                    )
                await conn.execute(
                    "INSERT INTO ml_pipeline_algorithms (pipeline_id, algorithm_id)"
                    " VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (pipeline_id, algorithm_id),
                )
                linked.add(algorithm_id)
        await link(conn, service_id, project_id, pipeline_ids)
    await conn.execute(
        "UPDATE ml_processingservice SET last_seen = now(), last_seen_live = true WHERE id = %s",
        (service_id,),
    )
    cachalot.wrote(*REGISTRATION_TABLES)
    return PipelineRegistrationResponse(
        timestamp=datetime.now(UTC),
        success=True,
        error=None,
        pipelines=[p.slug for p in request.pipelines],
        pipelines_created=created,
        algorithms_created=sorted(set(algorithms_created), key=algorithms_created.index),
        processing_service_id=service_id,
    )
