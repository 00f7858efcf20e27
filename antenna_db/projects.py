"""Projects (``main_project``) as the worker API lists them: the ones the caller may see."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from antenna_db.users import Caller, visible_projects


async def list_visible(
    conn: AsyncConnection[Any], who: Caller, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    viewer = None if who.is_superuser else who.user_id
    where = f" FROM main_project p WHERE {visible_projects()}"
    cur = await conn.execute("SELECT count(*) AS n" + where, {"viewer": viewer})
    row = await cur.fetchone()
    cur = await conn.execute(
        "SELECT p.id, p.name, p.description, p.draft, p.feature_flags, p.created_at"
        + where
        + " ORDER BY p.id LIMIT %(limit)s OFFSET %(offset)s",
        {"viewer": viewer, "limit": limit, "offset": offset},
    )
    return (int(row["n"]) if row else 0), list(await cur.fetchall())


async def exists(conn: AsyncConnection[Any], project_id: int) -> bool:
    cur = await conn.execute("SELECT 1 FROM main_project WHERE id = %s", (project_id,))
    return await cur.fetchone() is not None
