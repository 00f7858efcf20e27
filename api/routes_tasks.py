"""``POST /api/v2/jobs/{id}/tasks/``: hand a worker up to ``batch_size`` reserved tasks.

Status is read on every call (one primary-key lookup) so a CANCELING job gets [] at once.
``batch_size`` is at most MAX_BATCH_SIZE (Antenna has no maximum, but a NATS fetch of 2**63
fails, and the ADC asks for 24).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg

from antenna_db import job_store
from api.access import worker_job
from api.bodies import json_object, strict_int
from api.context import ApiContext, get_context
from api.http_errors import BadRequest
from api.routing import route
from core.states import ACTIVE_STATES, DispatchMode, JobState

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 1000


def _batch_size(body: dict[str, Any]) -> int:
    if "batch_size" not in body:
        raise BadRequest.field("batch_size", "This field is required.")
    if body["batch_size"] is None:
        raise BadRequest.field("batch_size", "This field may not be null.")
    value = strict_int(body, "batch_size", minimum=1, maximum=MAX_BATCH_SIZE)
    assert value is not None
    client_info = body.get("client_info")
    if client_info is not None and not isinstance(client_info, dict):
        raise BadRequest.field("client_info", "Expected an object.")
    return value


def _task(msg: Msg) -> dict[str, Any] | None:
    try:
        data = json.loads(msg.data)
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
    batch_size = _batch_size(await json_object(request))
    job = await worker_job(request, job_id)
    if job.dispatch_mode != DispatchMode.ASYNC_API:
        raise BadRequest.field("dispatch_mode", "Only async_api jobs have fetchable tasks")
    if job.pipeline_id is None:
        raise BadRequest.field("pipeline", "This job has no pipeline")
    if job.status not in ACTIVE_STATES or job.consumer is None:
        await _not_active(ctx, job_id, job.status)
        return JSONResponse({"tasks": []})
    await ctx.liveness.pipeline_seen(job.pipeline_id, job.project_id)
    tasks = []
    for msg in await ctx.tasks.fetch(job_id, job.consumer, batch_size):
        task = _task(msg)
        if task is None:
            # Unreadable forever: terminate it rather than let it bounce until max_deliver.
            log.error("job %s: terminating malformed task message %r", job_id, msg.data[:200])
            await msg.term()
        else:
            tasks.append(task)
    return JSONResponse({"tasks": tasks})


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
