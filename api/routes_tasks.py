"""``POST /api/v2/jobs/{id}/tasks/``: hand a worker up to ``batch_size`` reserved tasks.

Status is read on every call (one primary-key lookup) so a CANCELING job gets [] at once, and
so does a paused one. A job over its fair share while another project's job waits gets [] too
(api/fair_share.py): the ADC then moves on to the next job of its listing.
``batch_size`` is at most MAX_BATCH_SIZE (api/job_bodies.py).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg

from antenna_db import job_store
from antenna_db.job_store import WorkerView
from api.access import worker_job
from api.auth import caller_of
from api.bodies import json_object
from api.context import ApiContext, get_context
from api.http_errors import BadRequest
from api.job_bodies import TasksBody, parse
from api.routing import route
from api.worker_tally import identity
from core import json_codec, tracing
from core.states import ACTIVE_STATES, DispatchMode, JobState

log = logging.getLogger(__name__)


def _task(msg: Msg) -> dict[str, Any] | None:
    try:
        data = json_codec.loads(msg.data)
        return {
            "id": str(data["id"]),
            "image_id": str(data["image_id"]),
            "image_url": str(data["image_url"]),
            "reply_subject": msg.reply,
        }
    except (ValueError, KeyError, TypeError):
        return None


async def fetch_tasks(request: Request, job_id: int) -> JSONResponse:
    ctx = get_context(request)
    body = parse(TasksBody, await json_object(request))
    batch_size = body.batch_size
    job = await worker_job(request, job_id)
    # The ADC sends no trace headers: the request joins its job run's trace by job id.
    attributes = {
        **tracing.job_attributes(job_id, job.project_id, job.pipeline_slug, job.pipeline_id),
        "antenna_jobs.batch_size": batch_size,
    }
    who = identity(request, caller_of(request), body.client_info)
    with tracing.run_span("POST /api/v2/jobs/{id}/tasks/", attributes, job.trace_context) as span:
        span.set_attributes(who.attributes())
        answer, served = await _serve(ctx, job_id, job, batch_size)
        span.set_attribute("antenna_jobs.tasks", served)
        if job.run_id is not None and job.status in ACTIVE_STATES:
            # Every call to a running job counts for its worker, empty answers too.
            ctx.workers.fetched(who, job_id, job.run_id, served)
            await ctx.workers.maybe_flush()
        return answer


async def _serve(
    ctx: ApiContext, job_id: int, job: WorkerView, batch_size: int
) -> tuple[JSONResponse, int]:
    if job.dispatch_mode != DispatchMode.ASYNC_API:
        raise BadRequest.field("dispatch_mode", "Only async_api jobs have fetchable tasks")
    if job.pipeline_id is None:
        raise BadRequest.field("pipeline", "This job has no pipeline")
    # Whatever it is answered: a worker for this pipeline exists (metrics, "waiting for workers").
    await ctx.liveness.polled(job.pipeline_id)
    if job.status not in ACTIVE_STATES or job.consumer is None or job.run_id is None:
        await _not_active(ctx, job_id, job.status)
        return JSONResponse({"tasks": []}), 0
    await ctx.liveness.pipeline_seen(job.pipeline_id, job.project_id)
    if job.paused:
        await _withheld(ctx, job_id, "paused", "the job is paused")
        return JSONResponse({"tasks": []}), 0
    reason = await ctx.fair_share.withheld(job_id, batch_size)
    if reason is not None:
        await _withheld(ctx, job_id, "fair-share", f"fair share: {reason}")
        return JSONResponse({"tasks": []}), 0
    tasks = []
    for msg in await ctx.tasks.fetch(job_id, job.consumer, batch_size, run_id=job.run_id):
        task = _task(msg)
        if task is None:
            # Unreadable forever: terminate it rather than let it bounce until max_deliver.
            log.error("job %s: terminating malformed task message %r", job_id, msg.data[:200])
            await msg.term()
        else:
            tasks.append(task)
            ctx.task_images.remember(job.run_id, task["reply_subject"], task["image_id"])
    ctx.fair_share.took(job_id, len(tasks))
    return JSONResponse({"tasks": tasks}), len(tasks)


async def _withheld(ctx: ApiContext, job_id: int, kind: str, why: str) -> None:
    # One line per job and kind a minute: refused workers come back every few seconds.
    if ctx.log_throttle.ready((f"tasks-{kind}", job_id)):
        async with ctx.connection() as conn:
            await job_store.append_log(conn, job_id, f"Tasks requested: none served ({why})")


async def _not_active(ctx: ApiContext, job_id: int, status: JobState) -> None:
    # Its consumer is about to go (or gone): release this process's subscriptions to it.
    await ctx.tasks.forget(job_id)
    # One line per job a minute: idle workers poll every few seconds.
    if ctx.log_throttle.ready(("tasks-not-active", job_id)):
        async with ctx.connection() as conn:
            await job_store.append_log(
                conn, job_id, f"Tasks requested while the job is {status}: none served"
            )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/jobs")
    route(r, "POST", "/{job_id}/tasks/", fetch_tasks)
    return r
