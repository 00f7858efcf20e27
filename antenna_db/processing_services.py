"""Processing services (``ml_processingservice``), linked to the projects and pipelines they
serve: push-mode (sync) ones have an endpoint URL and SYNC_API jobs choose among the live ones
(activities/sync_api/service_choice.py); pull-mode (async) ones have none, register themselves over
HTTP (api/registration.py) and are "seen" when they poll (api/liveness.py).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db import cachalot
from core.errors import InvalidJobInput

SERVICE_TABLES = (
    "ml_processingservice",
    "ml_processingservice_projects",
    "ml_processingservice_pipelines",
)


async def add_push_service(
    conn: AsyncConnection[Any],
    *,
    name: str,
    endpoint_url: str,
    project_id: int,
    pipeline_slugs: list[str],
) -> int:
    """Create or update the service ``name`` and link it; idempotent. Returns its id."""
    if not endpoint_url.startswith(("http://", "https://")):
        raise InvalidJobInput("endpoint_url", f"not an http(s) URL: {endpoint_url!r}")
    if len(endpoint_url) > 1024:
        raise InvalidJobInput("endpoint_url", "Ensure this field has no more than 1024 characters.")
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM main_project WHERE id = %s", (project_id,))
        if await cur.fetchone() is None:
            raise InvalidJobInput("project", f"project {project_id} does not exist")
        cur = await conn.execute(
            "SELECT id, slug FROM ml_pipeline WHERE slug = ANY(%s)", (pipeline_slugs,)
        )
        pipelines = {r["slug"]: int(r["id"]) for r in await cur.fetchall()}
        unknown = sorted(set(pipeline_slugs) - set(pipelines))
        if unknown:
            raise InvalidJobInput("pipeline", f"no pipeline with slug {unknown[0]!r}")
        # Names are not unique in Antenna's table: the first of that name is the one updated.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"service:{name}",))
        cur = await conn.execute(
            "UPDATE ml_processingservice SET endpoint_url = %s, updated_at = now()"
            " WHERE id = (SELECT min(id) FROM ml_processingservice WHERE name = %s) RETURNING id",
            (endpoint_url.rstrip("/"), name),
        )
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute(
                "INSERT INTO ml_processingservice (created_at, updated_at, name, description,"
                " endpoint_url, last_seen, last_seen_live, last_seen_latency)"
                " VALUES (now(), now(), %s, '', %s, NULL, NULL, NULL) RETURNING id",
                (name, endpoint_url.rstrip("/")),
            )
            row = await cur.fetchone()
        assert row is not None
        service_id = int(row["id"])
        await link(conn, service_id, project_id, list(pipelines.values()))
    cachalot.wrote(*SERVICE_TABLES)
    return service_id


async def link(
    conn: AsyncConnection[Any], service_id: int, project_id: int, pipeline_ids: list[int]
) -> None:
    """The service serves this project and these pipelines (links that exist stay)."""
    await conn.execute(
        "INSERT INTO ml_processingservice_projects (processingservice_id, project_id)"
        " VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (service_id, project_id),
    )
    await conn.execute(
        "INSERT INTO ml_processingservice_pipelines (processingservice_id, pipeline_id)"
        " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
        (service_id, pipeline_ids),
    )


# Antenna's mark_seen for pull services: last_seen and last_seen_live, not updated_at.
_MARK_SEEN = "UPDATE ml_processingservice SET last_seen = now(), last_seen_live = true"
_OF_PIPELINE = (
    " AND id IN (SELECT processingservice_id FROM ml_processingservice_pipelines"
    "            WHERE pipeline_id = %s)"
)
_OF_PROJECT = (
    " AND id IN (SELECT processingservice_id FROM ml_processingservice_projects"
    "            WHERE project_id = %s)"
)


async def pull_services_seen(
    conn: AsyncConnection[Any],
    *,
    pipeline_id: int | None = None,
    slugs: list[str] | None = None,
    project_id: int | None = None,
) -> None:
    """Mark seen every async service of the pipeline (by id or slugs) and/or the project."""
    query = _MARK_SEEN + " WHERE endpoint_url IS NULL"
    params: list[Any] = []
    if pipeline_id is not None:
        query += _OF_PIPELINE
        params.append(pipeline_id)
    if slugs is not None:
        query += (
            " AND id IN (SELECT psp.processingservice_id FROM ml_processingservice_pipelines psp"
            "            JOIN ml_pipeline p ON p.id = psp.pipeline_id WHERE p.slug = ANY(%s))"
        )
        params.append(slugs)
    if project_id is not None:
        query += _OF_PROJECT
        params.append(project_id)
    await conn.execute(query, params)
    cachalot.wrote("ml_processingservice")


_SYNC_CANDIDATES = """
SELECT ps.id, ps.name, ps.endpoint_url
FROM jobs_job j
JOIN ml_processingservice_pipelines psp ON psp.pipeline_id = j.pipeline_id
JOIN ml_processingservice_projects psj
  ON psj.processingservice_id = psp.processingservice_id AND psj.project_id = j.project_id
JOIN ml_processingservice ps ON ps.id = psp.processingservice_id
WHERE j.id = %s AND ps.endpoint_url IS NOT NULL AND ps.endpoint_url <> ''
ORDER BY ps.id
"""


async def sync_candidates(conn: AsyncConnection[Any], job_id: int) -> list[dict[str, Any]]:
    """Push services of the job's pipeline in its project (id, name, endpoint_url)."""
    cur = await conn.execute(_SYNC_CANDIDATES, (job_id,))
    return list(await cur.fetchall())


async def record_probes(conn: AsyncConnection[Any], probes: list[tuple[int, float | None]]) -> None:
    """(service id, /readyz latency or None when not ready), as check_processing_services_online
    records them."""
    if probes:
        await conn.execute(
            "UPDATE ml_processingservice ps SET last_seen = now(), last_seen_live = c.live,"
            " last_seen_latency = coalesce(c.latency, ps.last_seen_latency)"
            " FROM unnest(%s::bigint[], %s::boolean[], %s::float8[]) AS c(id, live, latency)"
            " WHERE ps.id = c.id",
            (
                [p for p, _ in probes],
                [lat is not None for _, lat in probes],
                [lat for _, lat in probes],
            ),
        )
        cachalot.wrote("ml_processingservice")
