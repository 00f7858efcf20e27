"""Reading jobs for the HTTP API: the list (the ADC's "claim" poll) and one job's summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from api.pagination import Page
from core.job_store import JobRecord
from core.states import FINAL_STATES, DispatchMode

_FINAL = [s.value for s in FINAL_STATES]
_SUMMARY_COLUMNS = (
    "j.id, j.name, j.project_id, j.pipeline_id, j.collection_id, j.job_type, j.dispatch_mode,"
    ' j.status, j.progress, j.params, j.result, j."limit", j.shuffle, j.created_at,'
    " j.updated_at, j.started_at, j.finished_at, p.slug AS pipeline_slug"
)
_FROM = " FROM jobs j LEFT JOIN pipelines p ON p.id = j.pipeline_id"
# Antenna's incomplete_only: neither the job nor its results stage is final.
_INCOMPLETE = (
    " AND j.status <> ALL(%(final)s) AND NOT EXISTS ("
    "  SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.progress->'stages') = 'array'"
    "   THEN j.progress->'stages' ELSE '[]'::jsonb END) AS stage"
    "  WHERE stage->>'key' = 'results' AND stage->>'status' = ANY(%(final)s))"
)


@dataclass(frozen=True)
class JobFilters:
    project_id: int | None = None
    pipeline_id: int | None = None
    pipeline_slugs: list[str] | None = None
    dispatch_mode: DispatchMode | None = None
    statuses: list[str] | None = None
    incomplete_only: bool = False
    # The ADC drops a whole page if one pipeline_slug is null: ids_only lists jobs with one.
    with_pipeline: bool = False

    def where(self) -> tuple[str, dict[str, Any]]:
        clause = " WHERE true"
        params: dict[str, Any] = {"final": _FINAL}
        if self.project_id is not None:
            clause += " AND j.project_id = %(project_id)s"
            params["project_id"] = self.project_id
        if self.pipeline_id is not None:
            clause += " AND j.pipeline_id = %(pipeline_id)s"
            params["pipeline_id"] = self.pipeline_id
        if self.pipeline_slugs is not None:
            clause += " AND p.slug = ANY(%(slugs)s)"
            params["slugs"] = self.pipeline_slugs
        if self.dispatch_mode is not None:
            clause += " AND j.dispatch_mode = %(dispatch_mode)s"
            params["dispatch_mode"] = self.dispatch_mode.value
        if self.statuses is not None:
            clause += " AND j.status = ANY(%(statuses)s)"
            params["statuses"] = self.statuses
        if self.incomplete_only:
            clause += _INCOMPLETE
        if self.with_pipeline:
            clause += " AND p.slug IS NOT NULL"
        return clause, params


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: every column of the job, its pipeline's slug, its progress."""
    body = JobRecord.model_validate(row).model_dump(mode="json")
    body["pipeline_slug"] = row.get("pipeline_slug")
    return body


async def count_jobs(conn: AsyncConnection[Any], filters: JobFilters) -> int:
    where, params = filters.where()
    cur = await conn.execute("SELECT count(*) AS n" + _FROM + where, params)
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def list_job_ids(
    conn: AsyncConnection[Any], filters: JobFilters, page: Page
) -> list[dict[str, Any]]:
    """``{id, pipeline_slug}`` in random order: each worker poll is one random draw (#1261)."""
    where, params = filters.where()
    cur = await conn.execute(
        "SELECT j.id, p.slug AS pipeline_slug" + _FROM + where + " ORDER BY random()"
        " LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": page.limit, "offset": page.offset},
    )
    return [{"id": r["id"], "pipeline_slug": r["pipeline_slug"]} for r in await cur.fetchall()]


async def list_jobs(
    conn: AsyncConnection[Any], filters: JobFilters, page: Page
) -> list[dict[str, Any]]:
    where, params = filters.where()
    cur = await conn.execute(
        "SELECT " + _SUMMARY_COLUMNS + _FROM + where + " ORDER BY j.created_at DESC, j.id DESC"
        " LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": page.limit, "offset": page.offset},
    )
    return [summary(r) for r in await cur.fetchall()]


async def job_summary(conn: AsyncConnection[Any], job_id: int) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT " + _SUMMARY_COLUMNS + _FROM + " WHERE j.id = %s", (job_id,))
    row = await cur.fetchone()
    return summary(row) if row else None


async def pipeline_slug(conn: AsyncConnection[Any], pipeline_id: int | None) -> str | None:
    if pipeline_id is None:
        return None
    cur = await conn.execute("SELECT slug FROM pipelines WHERE id = %s", (pipeline_id,))
    row = await cur.fetchone()
    return str(row["slug"]) if row else None
