"""Push-mode (sync) processing services: a row with an endpoint URL, linked to the projects and
pipelines it serves. SYNC_API jobs choose among the live ones (activities/service_choice.py).

Pull-mode services register themselves over HTTP (api/registration.py) and have no URL.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from core.errors import InvalidJobInput


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
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM projects WHERE id = %s", (project_id,))
        if await cur.fetchone() is None:
            raise InvalidJobInput("project", f"project {project_id} does not exist")
        cur = await conn.execute(
            "SELECT id, slug FROM pipelines WHERE slug = ANY(%s)", (pipeline_slugs,)
        )
        pipelines = {r["slug"]: int(r["id"]) for r in await cur.fetchall()}
        unknown = sorted(set(pipeline_slugs) - set(pipelines))
        if unknown:
            raise InvalidJobInput("pipeline", f"no pipeline with slug {unknown[0]!r}")
        cur = await conn.execute(
            "INSERT INTO processing_services (name, endpoint_url) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET endpoint_url = EXCLUDED.endpoint_url RETURNING id",
            (name, endpoint_url.rstrip("/")),
        )
        row = await cur.fetchone()
        assert row is not None
        service_id = int(row["id"])
        await conn.execute(
            "INSERT INTO processing_service_projects (processing_service_id, project_id)"
            " VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (service_id, project_id),
        )
        await conn.execute(
            "INSERT INTO processing_service_pipelines (processing_service_id, pipeline_id)"
            " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
            (service_id, list(pipelines.values())),
        )
    return service_id
