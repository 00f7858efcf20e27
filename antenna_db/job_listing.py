"""Reading jobs for the HTTP API: the list (the ADC's "claim" poll) and one job's summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from antenna_db.job_store import COLUMNS, JobRecord
from antenna_db.users import runnable_jobs, visible_projects
from core.states import ACTIVE_STATES, FINAL_STATES, DispatchMode

_FINAL = [s.value for s in FINAL_STATES]
_ACTIVE = {s.value for s in ACTIVE_STATES}
_SUMMARY_COLUMNS = COLUMNS + ", p.slug AS pipeline_slug, r.paused_at"
_FROM = (
    " FROM jobs_job j LEFT JOIN ml_pipeline p ON p.id = j.pipeline_id"
    " JOIN main_project pr ON pr.id = j.project_id"
    " LEFT JOIN job_runs r ON r.job_id = j.id"
)
# Antenna's incomplete_only: neither the job nor its results stage is final.
_INCOMPLETE = (
    " AND j.status <> ALL(%(final)s) AND NOT EXISTS ("
    "  SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.progress->'stages') = 'array'"
    "   THEN j.progress->'stages' ELSE '[]'::jsonb END) AS stage"
    "  WHERE stage->>'key' = 'results' AND stage->>'status' = ANY(%(final)s))"
)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


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
    # Only jobs of projects this user may see (None: every job, for superusers).
    viewer: int | None = None
    # Only jobs this user may fetch tasks of (the claim listing; None: no such limit).
    runner: int | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        mode = self.dispatch_mode.value if self.dispatch_mode is not None else None
        params: dict[str, Any] = {"final": _FINAL, "viewer": self.viewer}
        conditions = [visible_projects("pr")]
        # Each filter that is set: its condition, on the parameter of that name.
        for name, value, condition in (
            ("runner", self.runner, runnable_jobs("j")),
            ("project_id", self.project_id, "j.project_id = %(project_id)s"),
            ("pipeline_id", self.pipeline_id, "j.pipeline_id = %(pipeline_id)s"),
            ("slugs", self.pipeline_slugs, "p.slug = ANY(%(slugs)s)"),
            ("dispatch_mode", mode, "j.dispatch_mode = %(dispatch_mode)s"),
            ("statuses", self.statuses, "j.status = ANY(%(statuses)s)"),
        ):
            if value is not None:
                conditions.append(condition)
                params[name] = value
        clause = " WHERE " + " AND ".join(conditions)
        if self.incomplete_only:
            clause += _INCOMPLETE
        if self.with_pipeline:
            clause += " AND p.slug IS NOT NULL"
        return clause, params


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: every column of the job, its pipeline's slug, its progress, and
    whether its run is paused (``paused``, ``paused_at``: antenna-jobs' own fields)."""
    body = JobRecord.model_validate(row).model_dump(mode="json")
    if isinstance(row.get("progress"), dict):
        # The progress JSON as stored (Antenna's own or ours), not with our defaults filled in.
        body["progress"] = row["progress"]
    body["pipeline_slug"] = row.get("pipeline_slug")
    paused_at = row.get("paused_at")
    active = body.get("status") in _ACTIVE
    body["paused"] = paused_at is not None and active
    body["paused_at"] = paused_at.isoformat() if paused_at is not None and active else None
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


async def job_summary(
    conn: AsyncConnection[Any], job_id: int, viewer: int | None = None
) -> dict[str, Any] | None:
    """The job as the API shows it, if ``viewer`` may see it (None: anyone)."""
    cur = await conn.execute(
        "SELECT "
        + _SUMMARY_COLUMNS
        + _FROM
        + " WHERE j.id = %(job)s AND "
        + visible_projects("pr"),
        {"job": job_id, "viewer": viewer},
    )
    row = await cur.fetchone()
    return summary(row) if row else None


async def running_async_jobs(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every running (tasks served), unpaused async_api job with its run's consumer."""
    cur = await conn.execute(
        "SELECT j.id, j.project_id, p.slug AS pipeline_slug, r.consumer"
        " FROM job_runs r JOIN jobs_job j ON j.id = r.job_id"
        " LEFT JOIN ml_pipeline p ON p.id = j.pipeline_id"
        " WHERE j.status = ANY(%s) AND j.dispatch_mode = %s AND r.paused_at IS NULL",
        ([s.value for s in ACTIVE_STATES], DispatchMode.ASYNC_API.value),
    )
    return list(await cur.fetchall())


async def list_job_candidates(
    conn: AsyncConnection[Any], filters: JobFilters, limit: int
) -> list[dict[str, Any]]:
    """``{id, pipeline_slug, project_id}`` of up to ``limit`` listed jobs in random order, for
    the fair-share listing to sort."""
    where, params = filters.where()
    cur = await conn.execute(
        "SELECT j.id, p.slug AS pipeline_slug, j.project_id" + _FROM + where + " ORDER BY random()"
        " LIMIT %(limit)s",
        {**params, "limit": limit},
    )
    return list(await cur.fetchall())
