"""A job's Celery task as Antenna's code sees it: ``jobs_job.task_id``, the row's status and when
it last changed (what AntennaTaskWorkflow reads while Antenna's own code runs the job).

Read without parsing the whole row: the job type may be one we do not know and the progress is
whatever Antenna's code for that type writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from antenna_db import cachalot, job_store
from core.states import DispatchMode, JobState, JobType


class TaskRow(BaseModel):
    id: int
    project_id: int
    job_type_key: str
    dispatch_mode: DispatchMode
    status: JobState
    task_id: str | None
    updated_at: datetime

    @property
    def job_type(self) -> JobType:
        """The key as we know it; any other (a type Antenna added) is UNKNOWN to us."""
        known = {t.value for t in JobType}
        return JobType(self.job_type_key) if self.job_type_key in known else JobType.UNKNOWN


async def get(conn: AsyncConnection[Any], job_id: int) -> TaskRow:
    row = await job_store.job_row(
        conn,
        "SELECT id, project_id, job_type_key, dispatch_mode, status, task_id, updated_at"
        " FROM jobs_job WHERE id = %s",
        job_id,
    )
    return TaskRow.model_validate(row)


async def set_task_id(
    conn: AsyncConnection[Any],
    job_id: int,
    task_id: str | None,
    *,
    unless_status: frozenset[JobState],
    expected: str | None = None,
    check_expected: bool = False,
) -> bool:
    """``task_id`` into the row (Antenna's cancel revokes the row's task id and its
    task_failure handler finds the job by it), unless the row is in ``unless_status`` or, with
    ``check_expected``, holds another task id than ``expected``; True if written."""
    where = "id = %s AND NOT (status = ANY(%s))"
    params: list[Any] = [task_id, job_id, [s.value for s in unless_status]]
    if check_expected:
        where += " AND task_id IS NOT DISTINCT FROM %s"
        params.append(expected)
    cur = await conn.execute(
        f"UPDATE jobs_job SET task_id = %s, updated_at = now() WHERE {where}", params
    )
    cachalot.wrote("jobs_job")
    return cur.rowcount == 1
