"""Reads and guarded writes of the jobs table, shared by the API and the activities.

Every status write is ``UPDATE ... WHERE status IN (...)`` so a stale writer can never move a job
out of a final state (antenna#1337). No row locks: one writer of progress per running job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from core.errors import InvalidJobInput, JobNotFound
from core.job_params import validate_params
from core.progress import JobProgress, new_export_progress, new_ml_progress, new_populate_progress
from core.states import DispatchMode, JobState, JobType
from core.wire_types import INT4_MAX

_COLUMNS = (
    "id, name, project_id, pipeline_id, collection_id, job_type, dispatch_mode, status,"
    ' progress, params, result, "limit", shuffle, created_at, updated_at, started_at, finished_at'
)


class JobRecord(BaseModel):
    id: int
    name: str
    project_id: int
    pipeline_id: int | None
    collection_id: int | None
    job_type: JobType
    dispatch_mode: DispatchMode
    status: JobState
    progress: JobProgress
    params: dict[str, Any]
    result: dict[str, Any] | None
    limit: int | None
    shuffle: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


async def get_job(conn: AsyncConnection[Any], job_id: int) -> JobRecord:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return JobRecord.model_validate(row)


async def get_status(conn: AsyncConnection[Any], job_id: int) -> JobState:
    cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return JobState(row["status"])


async def choose_dispatch_mode(
    conn: AsyncConnection[Any], project_id: int, requested: DispatchMode | None
) -> DispatchMode:
    """Antenna's rule: an explicit mode stays; else the project's async flag decides."""
    if requested is not None and requested != DispatchMode.INTERNAL:
        return requested
    cur = await conn.execute(
        "SELECT async_pipeline_workers FROM projects WHERE id = %s", (project_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise InvalidJobInput("project", f"project {project_id} does not exist")
    return DispatchMode.ASYNC_API if row["async_pipeline_workers"] else DispatchMode.SYNC_API


async def create_ml_job(
    conn: AsyncConnection[Any],
    *,
    project_id: int,
    pipeline_slug: str,
    collection_id: int,
    name: str | None = None,
    dispatch_mode: DispatchMode | None = None,
    limit: int | None = None,
    shuffle: bool = True,
) -> JobRecord:
    """Create an ML job after checking that what it names exists and belongs together."""
    cur = await conn.execute("SELECT id FROM pipelines WHERE slug = %s", (pipeline_slug,))
    pipeline = await cur.fetchone()
    if pipeline is None:
        raise InvalidJobInput("pipeline", f"no pipeline with slug {pipeline_slug!r}")
    cur = await conn.execute("SELECT project_id FROM collections WHERE id = %s", (collection_id,))
    collection = await cur.fetchone()
    if collection is None:
        raise InvalidJobInput("collection", f"collection {collection_id} does not exist")
    if collection["project_id"] != project_id:
        raise InvalidJobInput(
            "collection", f"collection {collection_id} is not in project {project_id}"
        )
    if limit is not None and not 0 <= limit <= INT4_MAX:
        raise InvalidJobInput("limit", f"must be between 0 and {INT4_MAX}")
    mode = await choose_dispatch_mode(conn, project_id, dispatch_mode)
    cur = await conn.execute(
        "INSERT INTO jobs (name, project_id, pipeline_id, collection_id, job_type,"
        ' dispatch_mode, progress, "limit", shuffle)'
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            name or f"{pipeline_slug} on collection {collection_id}",
            project_id,
            pipeline["id"],
            collection_id,
            JobType.ML.value,
            mode.value,
            json.dumps(new_ml_progress().as_json()),
            limit,
            shuffle,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return await get_job(conn, row["id"])


async def create_internal_job(
    conn: AsyncConnection[Any],
    *,
    job_type: JobType,
    project_id: int,
    collection_id: int | None = None,
    params: dict[str, Any] | None = None,
    name: str | None = None,
) -> JobRecord:
    """Create a populate_captures_collection or data_export job (dispatch mode internal)."""
    if job_type == JobType.ML:
        raise InvalidJobInput("job_type", "ML jobs are created with a pipeline (create_ml_job)")
    stored = validate_params(job_type, params or {})
    cur = await conn.execute("SELECT 1 FROM projects WHERE id = %s", (project_id,))
    if await cur.fetchone() is None:
        raise InvalidJobInput("project", f"project {project_id} does not exist")
    if collection_id is None and job_type == JobType.POPULATE_CAPTURES_COLLECTION:
        raise InvalidJobInput("collection", "the collection to populate is required")
    if collection_id is not None:
        cur = await conn.execute(
            "SELECT project_id FROM collections WHERE id = %s", (collection_id,)
        )
        collection = await cur.fetchone()
        if collection is None:
            raise InvalidJobInput("collection", f"collection {collection_id} does not exist")
        if collection["project_id"] != project_id:
            raise InvalidJobInput(
                "collection", f"collection {collection_id} is not in project {project_id}"
            )
    if job_type == JobType.POPULATE_CAPTURES_COLLECTION:
        progress = new_populate_progress()
        default_name = f"Populate collection {collection_id} ({stored['method']})"
    else:
        progress = new_export_progress()
        scope = f"collection {collection_id}" if collection_id else f"project {project_id}"
        default_name = f"Export {scope} as {stored['format']}"
    cur = await conn.execute(
        "INSERT INTO jobs (name, project_id, collection_id, job_type, dispatch_mode, progress,"
        " params) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            name or default_name,
            project_id,
            collection_id,
            job_type.value,
            DispatchMode.INTERNAL.value,
            json.dumps(progress.as_json()),
            json.dumps(stored),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return await get_job(conn, row["id"])


async def transition(
    conn: AsyncConnection[Any],
    job_id: int,
    to: JobState,
    from_states: Iterable[JobState],
    *,
    started: bool = False,
    finished: bool = False,
    progress: JobProgress | None = None,
    unchanged_since: datetime | None = None,
) -> bool:
    """Move a job to ``to`` only if it is in one of ``from_states``; True if it moved.

    ``started`` stamps started_at and clears finished_at; ``finished`` stamps finished_at.
    The progress summary's status follows the job's status in the same statement.
    ``unchanged_since`` (an updated_at read earlier) also requires that nothing wrote the row
    since: a decision made on that read is still valid.
    """
    progress_sql = "%s::jsonb" if progress is not None else "progress"
    params: list[Any] = []
    if progress is not None:
        params.append(json.dumps(progress.as_json()))
    params += [to.value, to.value, job_id, [s.value for s in from_states]]
    if unchanged_since is not None:
        params.append(unchanged_since)
    cur = await conn.execute(
        "UPDATE jobs SET"
        f" progress = jsonb_set({progress_sql}, '{{summary,status}}', to_jsonb(%s::text)),"
        " status = %s, updated_at = now()"
        + (", started_at = now(), finished_at = NULL" if started else "")
        + (", finished_at = now()" if finished else "")
        + " WHERE id = %s AND status = ANY(%s)"
        + (" AND updated_at = %s" if unchanged_since is not None else ""),
        params,
    )
    return cur.rowcount == 1


async def save_progress(
    conn: AsyncConnection[Any],
    job_id: int,
    progress: JobProgress,
    *,
    run_started_at: datetime | None = None,
) -> bool:
    """Write the progress JSON, keeping the summary status the row's own status.

    ``run_started_at`` (the started_at the writer's run began with) makes a writer whose run is
    over (the job was started again since) write nothing. True if the row was written.
    """
    guard = " AND started_at = %s" if run_started_at is not None else ""
    params: list[Any] = [json.dumps(progress.as_json()), job_id]
    if run_started_at is not None:
        params.append(run_started_at)
    cur = await conn.execute(
        "UPDATE jobs SET progress = jsonb_set(%s::jsonb, '{summary,status}', to_jsonb(status)),"
        " updated_at = now() WHERE id = %s" + guard,
        params,
    )
    return cur.rowcount == 1


async def save_result(conn: AsyncConnection[Any], job_id: int, result: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE jobs SET result = %s::jsonb, updated_at = now() WHERE id = %s",
        (json.dumps(result), job_id),
    )


async def append_log(
    conn: AsyncConnection[Any],
    job_id: int,
    message: str,
    *,
    level: str = "INFO",
    context: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO job_logs (job_id, level, message, context) VALUES (%s, %s, %s, %s::jsonb)",
        (job_id, level, message, json.dumps(context or {})),
    )


async def latest_logs(conn: AsyncConnection[Any], job_id: int, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT created_at, level, message, context FROM job_logs"
        " WHERE job_id = %s ORDER BY id DESC LIMIT %s",
        (job_id, limit),
    )
    return list(await cur.fetchall())
