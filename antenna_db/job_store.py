"""Antenna's job rows: ``jobs_job`` reads, creation and guarded writes, and ``jobs_joblog`` lines.

Columns change as Antenna's own writers change them (docs/antenna-db.md section 3): every
status write is ``UPDATE ... WHERE status IN (...)``, so a stale writer can never move a job out of
a final state (antenna#1337), and the progress summary's status follows the row's status in the
same statement. No row locks: one writer of progress per running job. ``logs`` (deprecated in
Antenna, read by its list view) stays ``{"stdout": [], "stderr": []}``; lines go to jobs_joblog.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any

from psycopg import AsyncConnection
from pydantic import BaseModel, BeforeValidator

from antenna_db import cachalot, exports, users
from core.errors import InvalidJobInput, JobNotFound
from core.job_params import validate_params
from core.job_requests import NewInternalJob, NewMlJob
from core.progress import JobProgress, new_export_progress, new_ml_progress, new_populate_progress
from core.states import FINAL_STATES, DispatchMode, JobState, JobType
from core.text import storable, storable_json
from storage import job_runs

NAME_MAX = 255
EMPTY_LOGS = '{"stdout": [], "stderr": []}'

COLUMNS = (
    "j.id, j.name, j.project_id, j.pipeline_id, j.source_image_collection_id AS collection_id,"
    " j.deployment_id, j.source_image_single_id, j.data_export_id, j.job_type_key AS job_type,"
    ' j.dispatch_mode, j.status, j.progress, j.params, j.result, j."limit", j.shuffle, j.delay,'
    " j.task_id, j.created_at, j.updated_at, j.scheduled_at, j.started_at, j.finished_at"
)


def _job_type_as_found(value: Any) -> Any:
    return JobType.as_found(value) if isinstance(value, str) else value


class JobRecord(BaseModel):
    id: int
    name: str
    project_id: int
    pipeline_id: int | None
    collection_id: int | None
    deployment_id: int | None = None
    source_image_single_id: int | None = None
    data_export_id: int | None = None
    # Read as the row holds it: a job type Antenna adds later must not make the row unreadable.
    job_type: Annotated[JobType, BeforeValidator(_job_type_as_found)]
    dispatch_mode: DispatchMode
    status: JobState
    progress: JobProgress
    params: dict[str, Any] | None
    result: dict[str, Any] | None
    limit: int | None
    shuffle: bool
    delay: int = 0
    task_id: str | None = None
    created_at: datetime
    updated_at: datetime
    scheduled_at: datetime | None = None
    started_at: datetime | None
    finished_at: datetime | None


async def job_row(conn: AsyncConnection[Any], query: str, job_id: int) -> dict[str, Any]:
    """The row ``query`` reads for the job (its one parameter); JobNotFound if there is none."""
    cur = await conn.execute(query, (job_id,))
    row = await cur.fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return dict(row)


async def get_job(conn: AsyncConnection[Any], job_id: int) -> JobRecord:
    return JobRecord.model_validate(
        await job_row(conn, f"SELECT {COLUMNS} FROM jobs_job j WHERE j.id = %s", job_id)
    )


async def get_status(conn: AsyncConnection[Any], job_id: int) -> JobState:
    row = await job_row(conn, "SELECT status FROM jobs_job WHERE id = %s", job_id)
    return JobState(row["status"])


# Antenna's ProjectFeatureFlags: a missing key takes its default (async workers: on).
_ASYNC_FLAG = (
    "CASE WHEN jsonb_typeof(feature_flags->'async_pipeline_workers') = 'boolean'"
    " THEN (feature_flags->>'async_pipeline_workers')::boolean ELSE true END"
)


async def choose_dispatch_mode(
    conn: AsyncConnection[Any], project_id: int, requested: DispatchMode | None
) -> DispatchMode:
    """Antenna's Job.setup(): an explicit mode stays; else the project's async flag decides."""
    if requested is not None and requested != DispatchMode.INTERNAL:
        return requested
    cur = await conn.execute(
        f"SELECT {_ASYNC_FLAG} AS async FROM main_project WHERE id = %s", (project_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise InvalidJobInput("project", f"project {project_id} does not exist")
    return DispatchMode.ASYNC_API if row["async"] else DispatchMode.SYNC_API


def _name(name: str | None, default: str) -> str:
    if name is None:
        return default[:NAME_MAX]
    if len(name) > NAME_MAX:
        raise InvalidJobInput("name", f"Ensure this field has no more than {NAME_MAX} characters.")
    return storable(name)


async def _collection_project(conn: AsyncConnection[Any], collection_id: int) -> int:
    cur = await conn.execute(
        "SELECT project_id FROM main_sourceimagecollection WHERE id = %s", (collection_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise InvalidJobInput("collection", f"collection {collection_id} does not exist")
    return int(row["project_id"])


_INSERT = (
    "INSERT INTO jobs_job (created_at, updated_at, name, queue, status, progress, logs, delay,"
    " shuffle, job_type_key, dispatch_mode, project_id, pipeline_id, source_image_collection_id,"
    ' "limit", params, data_export_id)'
    " VALUES (now(), now(), %(name)s, 'default', 'CREATED', %(progress)s, %(logs)s, 0,"
    " %(shuffle)s, %(job_type)s, %(mode)s, %(project)s, %(pipeline)s, %(collection)s,"
    " %(limit)s, %(params)s, %(export)s) RETURNING id"
)


async def create_ml_job(conn: AsyncConnection[Any], new: NewMlJob) -> JobRecord:
    """Create an ML job as Antenna's API does, after checking that what it names belongs
    together."""
    cur = await conn.execute("SELECT id FROM ml_pipeline WHERE slug = %s", (new.pipeline_slug,))
    pipeline = await cur.fetchone()
    if pipeline is None:
        raise InvalidJobInput("pipeline", f"no pipeline with slug {new.pipeline_slug!r}")
    if await _collection_project(conn, new.collection_id) != new.project_id:
        raise InvalidJobInput(
            "collection", f"collection {new.collection_id} is not in project {new.project_id}"
        )
    mode = await choose_dispatch_mode(conn, new.project_id, new.dispatch_mode)
    name = f"{new.pipeline_slug} on collection {new.collection_id}"
    return await _insert(
        conn, new, name, new_ml_progress(), mode, pipeline=pipeline["id"], limit=new.limit
    )


async def create_internal_job(
    conn: AsyncConnection[Any], new: NewInternalJob, user_id: int | None = None
) -> JobRecord:
    """Create a populate_captures_collection or data_export job (dispatch mode internal); an
    export gets its exports_dataexport row, as in Antenna (owned by ``user_id``, else by the
    antenna-jobs system user)."""
    if new.job_type == JobType.ML:
        raise InvalidJobInput("job_type", "ML jobs are created with a pipeline (create_ml_job)")
    stored = validate_params(new.job_type, new.params)
    cur = await conn.execute("SELECT 1 FROM main_project WHERE id = %s", (new.project_id,))
    if await cur.fetchone() is None:
        raise InvalidJobInput("project", f"project {new.project_id} does not exist")
    if new.collection_id is None and new.job_type == JobType.POPULATE_CAPTURES_COLLECTION:
        raise InvalidJobInput("collection", "the collection to populate is required")
    collection = new.collection_id
    if collection is not None and await _collection_project(conn, collection) != new.project_id:
        raise InvalidJobInput(
            "collection", f"collection {new.collection_id} is not in project {new.project_id}"
        )
    if new.job_type == JobType.POPULATE_CAPTURES_COLLECTION:
        progress = new_populate_progress()
        default_name = f"Populate collection {new.collection_id} ({stored['method']})"
        data_export_id = None
    else:
        progress = new_export_progress()
        scope = f"collection {collection}" if collection else f"project {new.project_id}"
        default_name = f"Export {scope} as {stored['format']}"
        owner = user_id if user_id is not None else await users.system_user(conn)
        data_export_id = await exports.create(conn, new.project_id, owner, stored["format"])
    return await _insert(
        conn,
        new,
        default_name,
        progress,
        DispatchMode.INTERNAL,
        params=json.dumps(stored),
        export=data_export_id,
    )


async def _insert(
    conn: AsyncConnection[Any],
    new: NewMlJob | NewInternalJob,
    default_name: str,
    progress: JobProgress,
    mode: DispatchMode,
    *,
    pipeline: int | None = None,
    limit: int | None = None,
    params: str | None = None,
    export: int | None = None,
) -> JobRecord:
    """The new job's row (CREATED, as Antenna's Job.save() leaves it); what the row holds."""
    cur = await conn.execute(
        _INSERT,
        {
            "name": _name(new.name, default_name),
            "progress": json.dumps(progress.as_json()),
            "logs": EMPTY_LOGS,
            "shuffle": new.shuffle if isinstance(new, NewMlJob) else True,
            "job_type": new.job_type.value if isinstance(new, NewInternalJob) else JobType.ML.value,
            "mode": mode.value,
            "project": new.project_id,
            "pipeline": pipeline,
            "collection": new.collection_id,
            "limit": limit,
            "params": params,
            "export": export,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    cachalot.wrote("jobs_job")
    return await get_job(conn, row["id"])


async def transition(
    conn: AsyncConnection[Any],
    job_id: int,
    to: JobState,
    from_states: Iterable[JobState],
    *,
    enqueued: bool = False,
    started: bool = False,
    finished: bool = False,
    reopened: bool = False,
    progress: JobProgress | None = None,
    unchanged_since: datetime | None = None,
) -> bool:
    """Move a job to ``to`` only if it is in one of ``from_states``; True if it moved.

    As Antenna's writers do: ``enqueued`` (Job.enqueue) gives it a new task_id and scheduled_at
    and clears started_at/finished_at; ``started`` stamps started_at and clears finished_at;
    ``finished`` stamps finished_at; ``reopened`` (Job.retry) clears finished_at. The progress
    summary's status follows the job's status in the same statement. ``unchanged_since`` (an
    updated_at read earlier) also requires that nothing wrote the row since.
    """
    progress_sql = "%(progress)s::jsonb" if progress is not None else "progress"
    sets = [
        f"progress = jsonb_set({progress_sql}, '{{summary,status}}', to_jsonb(%(to)s::text))",
        "status = %(to)s",
        "updated_at = now()",
    ]
    if enqueued:
        sets += [
            "task_id = %(task_id)s",
            "scheduled_at = now()",
            "started_at = NULL",
            "finished_at = NULL",
        ]
    if started:
        sets += ["started_at = now()", "finished_at = NULL"]
    if finished:
        sets.append("finished_at = now()")
    if reopened:
        sets.append("finished_at = NULL")
    where = "id = %(id)s AND status = ANY(%(from)s)"
    if unchanged_since is not None:
        where += " AND updated_at = %(since)s"
    cur = await conn.execute(
        f"UPDATE jobs_job SET {', '.join(sets)} WHERE {where}",
        {
            "progress": json.dumps(progress.as_json()) if progress is not None else None,
            "to": to.value,
            "task_id": str(uuid.uuid4()),
            "id": job_id,
            "from": [s.value for s in from_states],
            "since": unchanged_since,
        },
    )
    cachalot.wrote("jobs_job")
    return cur.rowcount == 1


async def save_progress(
    conn: AsyncConnection[Any],
    job_id: int,
    progress: JobProgress,
    *,
    run_id: str | None = None,
) -> bool:
    """Write the progress JSON (and updated_at), keeping the summary status the row's own.

    ``run_id`` (the run the writer works for) makes a writer whose run is over (the job was
    started again since) write nothing. True if the row was written.
    """
    guard = (
        " AND EXISTS (SELECT 1 FROM job_runs r WHERE r.job_id = jobs_job.id AND r.run_id = %s)"
        if run_id is not None
        else ""
    )
    params: list[Any] = [json.dumps(progress.as_json()), job_id]
    if run_id is not None:
        params.append(run_id)
    cur = await conn.execute(
        "UPDATE jobs_job SET progress = jsonb_set(%s::jsonb, '{summary,status}', to_jsonb(status)),"
        " updated_at = now() WHERE id = %s" + guard,
        params,
    )
    cachalot.wrote("jobs_job")
    return cur.rowcount == 1


async def clear_run_params(conn: AsyncConnection[Any], job_id: int) -> bool:
    """The job ended: its process stage no longer says it is paused or waiting for workers
    (written only if it did). True if the progress was written."""
    cur = await conn.execute("SELECT progress FROM jobs_job WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    if row is None:
        return False
    progress = JobProgress.model_validate(row["progress"])
    if not progress.clear_run_params():
        return False
    return await save_progress(conn, job_id, progress)


class RunState(BaseModel):
    status: JobState
    # The run that owns the job now (job_runs), None before any workflow took it.
    run_id: str | None
    consumer: str | None


async def run_state(conn: AsyncConnection[Any], job_id: int, *, share: bool = False) -> RunState:
    """The job's status and current run; ``share`` locks the job row FOR SHARE (in the caller's
    transaction), so a status change waits for it or is seen by it."""
    lock = " FOR SHARE OF j" if share else ""
    row = await job_row(
        conn,
        "SELECT j.status, r.run_id, r.consumer FROM jobs_job j"
        f" LEFT JOIN job_runs r ON r.job_id = j.id WHERE j.id = %s{lock}",
        job_id,
    )
    return RunState.model_validate(row)


class WorkerView(BaseModel):
    """What the worker endpoints need of a job."""

    status: JobState
    dispatch_mode: DispatchMode
    pipeline_id: int | None
    project_id: int
    source_image_single_id: int | None
    # The current run (None before any workflow took the job).
    run_id: str | None = None
    # The current run's consumer, once the run has collected its images (None before): every
    # run's consumer has the same name (core/naming.py), and only after collect is the job's
    # stream sure to be this run's (the run's reset, which deletes an earlier run's stream,
    # comes before collect), so a task or an ack subject checked against the stream then is
    # one of this run's.
    consumer: str | None
    # The current run is paused: /tasks/ hands out nothing until it is resumed.
    paused: bool = False
    # The run's traceparent when it is traced: the request's span joins the run's trace.
    trace_context: str | None = None
    pipeline_slug: str | None = None


async def worker_view(conn: AsyncConnection[Any], job_id: int) -> WorkerView:
    row = await job_row(
        conn,
        "SELECT j.status, j.dispatch_mode, j.pipeline_id, j.project_id, j.source_image_single_id,"
        " r.run_id, CASE WHEN r.collected_at IS NOT NULL THEN r.consumer END AS consumer,"
        " r.paused_at IS NOT NULL AS paused, r.trace_context,"
        " (SELECT slug FROM ml_pipeline m WHERE m.id = j.pipeline_id) AS pipeline_slug"
        " FROM jobs_job j LEFT JOIN job_runs r ON r.job_id = j.id WHERE j.id = %s",
        job_id,
    )
    return WorkerView.model_validate(row)


async def touch(conn: AsyncConnection[Any], job_id: int) -> None:
    """Bump updated_at: Antenna's reaper revokes a running job whose row is 10 minutes old."""
    await conn.execute("UPDATE jobs_job SET updated_at = now() WHERE id = %s", (job_id,))
    cachalot.wrote("jobs_job")


async def touch_all(conn: AsyncConnection[Any], job_ids: list[int]) -> None:
    """``touch`` for several jobs at once, in the caller's transaction: the caller says it wrote
    (``cachalot.wrote("jobs_job")``) once that commits."""
    await conn.execute(
        "UPDATE jobs_job SET updated_at = now() WHERE id = ANY(%s::bigint[])", (job_ids,)
    )


_WATCHED = """
SELECT j.id, j.status, r.run_id, coalesce(r.processed, 0) + coalesce(r.failed, 0) AS done,
       r.paused_at IS NOT NULL AS paused,
       EXISTS (SELECT 1 FROM result_inbox i WHERE i.job_id = j.id) AS waiting,
       extract(epoch FROM now() - pp.polled_at)::float8 AS poll_age
FROM jobs_job j LEFT JOIN job_runs r ON r.job_id = j.id
     LEFT JOIN pipeline_polls pp ON pp.pipeline_id = j.pipeline_id
WHERE j.id = ANY(%s::bigint[])"""


async def watched(conn: AsyncConnection[Any], job_ids: list[int]) -> list[dict[str, Any]]:
    """What the inbox watch (activities/async_api/inbox_watch.py) reads of each job that
    exists: its status, current run, images the run counted done, whether it is paused,
    whether result rows wait, and seconds since its pipeline was last polled (None: never)."""
    cur = await conn.execute(_WATCHED, (job_ids,))
    return list(await cur.fetchall())


async def save_result(conn: AsyncConnection[Any], job_id: int, result: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE jobs_job SET result = %s::jsonb, updated_at = now() WHERE id = %s",
        (storable_json(result), job_id),
    )
    cachalot.wrote("jobs_job")


async def append_log(
    conn: AsyncConnection[Any],
    job_id: int,
    message: str,
    *,
    level: str = "INFO",
    context: dict[str, Any] | None = None,
) -> None:
    """One jobs_joblog line, as Antenna's JobLogHandler writes it (level name, plain text)."""
    await conn.execute(
        "INSERT INTO jobs_joblog (created_at, updated_at, level, message, context, job_id)"
        " VALUES (now(), now(), %s, %s, %s::jsonb, %s)",
        (level, storable(message), storable_json(context or {}), job_id),
    )
    cachalot.wrote("jobs_joblog")


async def append_logs(
    conn: AsyncConnection[Any], job_id: int, messages: list[str], *, level: str = "INFO"
) -> None:
    """Several jobs_joblog lines of one level in one statement (in order: ids ascending)."""
    if not messages:
        return
    await conn.execute(
        "INSERT INTO jobs_joblog (created_at, updated_at, level, message, context, job_id)"
        " SELECT now(), now(), %s, m, '{}'::jsonb, %s FROM unnest(%s::text[])"
        " WITH ORDINALITY AS t(m, n) ORDER BY n",
        (level, job_id, [storable(m) for m in messages]),
    )
    cachalot.wrote("jobs_joblog")


async def count_logs_since_run(
    conn: AsyncConnection[Any], job_id: int, level: str, prefix: str, limit: int
) -> int:
    """How many of the job's lines at ``level`` starting with ``prefix`` the current run
    (job_runs.started_at) wrote, counted up to ``limit``."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM (SELECT 1 FROM jobs_joblog l JOIN job_runs r"
        " ON r.job_id = l.job_id WHERE l.job_id = %s AND l.level = %s"
        " AND l.created_at >= r.started_at AND starts_with(l.message, %s) LIMIT %s) found",
        (job_id, level, prefix, limit),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def latest_logs(conn: AsyncConnection[Any], job_id: int, limit: int) -> list[dict[str, Any]]:
    """Newest first, as Antenna's detail view reads them."""
    cur = await conn.execute(
        "SELECT created_at, level, message, context FROM jobs_joblog"
        " WHERE job_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        (job_id, limit),
    )
    return list(await cur.fetchall())


async def reconcile_candidates(
    conn: AsyncConnection[Any],
    states: Iterable[JobState],
    grace: timedelta,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    """Jobs in ``states`` with id > ``after``: id, status, updated_at and ``quiet`` (untouched
    for ``grace``)."""
    cur = await conn.execute(
        "SELECT id, status, updated_at, now() - updated_at > %s AS quiet FROM jobs_job"
        " WHERE status = ANY(%s) AND id > %s ORDER BY id LIMIT %s",
        (grace, [s.value for s in states], after, limit),
    )
    return list(await cur.fetchall())


async def statuses(conn: AsyncConnection[Any], ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """id -> {status, finished_at} of the jobs that exist."""
    cur = await conn.execute(
        "SELECT id, status, finished_at FROM jobs_job WHERE id = ANY(%s)", (list(ids),)
    )
    return {r["id"]: r for r in await cur.fetchall()}


async def remove_inbox_of_final_jobs(conn: AsyncConnection[Any]) -> int:
    """Results stored for jobs that ended (nothing will drain them); how many went."""
    cur = await conn.execute(
        "WITH gone AS (DELETE FROM result_inbox i USING jobs_job j"
        " WHERE i.job_id = j.id AND j.status = ANY(%s) RETURNING 1)"
        " SELECT count(*) AS n FROM gone",
        ([s.value for s in FINAL_STATES],),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def pause_run(
    conn: AsyncConnection[Any],
    job_id: int,
    paused: bool,
    reason: str,
    run_id: str | None = None,
    request: int | None = None,
) -> bool:
    """Pause (or resume) the job's current run (``run_id``: only if it is that run; ``request``:
    only if no newer request was made) with a line in the job log; True if it changed. A repeated
    pause or resume writes nothing."""
    async with conn.transaction():
        changed = await job_runs.set_paused(conn, job_id, paused, run_id, request)
        if changed:
            message = (
                f"Paused: {reason}. No tasks are handed out until the job is resumed;"
                " results already in flight are still saved"
                if paused
                else f"Resumed: {reason}. Tasks are handed out again"
            )
            await append_log(conn, job_id, message, context={"paused": paused})
    return changed


async def request_pause(
    conn: AsyncConnection[Any], job_id: int, paused: bool, reason: str
) -> int | None:
    """A pause or resume asked through our API or CLI: applied now, and numbered so that the
    workflow, told afterwards, never applies an older request over it. The request's number."""
    async with conn.transaction():
        request = await job_runs.count_pause_request(conn, job_id)
        await pause_run(conn, job_id, paused, reason, request=request)
    return request
