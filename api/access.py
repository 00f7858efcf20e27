"""The job a worker endpoint acts on, and whether the caller may act on it.

A job the caller cannot see is a 404 (as Antenna's get_object on a filtered queryset); one it
can see but may not run is a 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from psycopg import AsyncConnection

from antenna_db import job_store, users
from antenna_db.job_store import JobRecord, WorkerView
from api.auth import caller_of, require_perm
from api.context import get_context
from core.errors import JobNotFound
from core.states import JobType, run_permission

# A job as one endpoint reads it (the whole row, or what the worker endpoints need of it).
J = TypeVar("J", JobRecord, WorkerView)


def viewer(request: Request) -> int | None:
    """The user whose visibility limits what a request sees (None: a superuser sees all)."""
    who = caller_of(request)
    return None if who.is_superuser else who.user_id


async def _visible(
    request: Request, job_id: int, read: Callable[[AsyncConnection[Any], int], Awaitable[J]]
) -> J:
    """What ``read`` reads of the job, if the caller may see its project (else a 404)."""
    who = caller_of(request)
    async with get_context(request).connection() as conn:
        job = await read(conn, job_id)
        if not who.is_superuser and not await users.can_see_project(conn, who, job.project_id):
            raise JobNotFound(job_id)
    return job


async def visible_job(request: Request, job_id: int) -> JobRecord:
    return await _visible(request, job_id, job_store.get_job)


async def runnable_job(request: Request, job_id: int) -> JobRecord:
    """The job, if the caller may run, retry and cancel it."""
    job = await visible_job(request, job_id)
    single = job.source_image_single_id is not None
    await require_perm(request, run_permission(job.job_type, single), job.project_id)
    return job


async def may_create(request: Request, project_id: int, job_type: JobType, start: bool) -> None:
    """Antenna: ``create_job`` to create; the run permission too to start at once."""
    await require_perm(request, "create_job", project_id)
    if start:
        await require_perm(request, run_permission(job_type), project_id)


async def worker_job(request: Request, job_id: int) -> WorkerView:
    job = await _visible(request, job_id, job_store.worker_view)
    codename = run_permission(JobType.ML, job.source_image_single_id is not None)
    await require_perm(request, codename, job.project_id)
    return job
