"""``POST /api/v2/jobs/{id}/result/``: store posted results durably, then ack their tasks.

Order matters: a task is acked only after its result is committed to ``result_inbox``, so a crash
between the two makes NATS redeliver a task whose result is already stored (the aggregator
dedupes), never lose one. Valid entries are kept even when others in the request are invalid.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from psycopg_pool import PoolTimeout

from antenna_db import job_store
from api.access import worker_job
from api.bodies import parse_json
from api.context import get_context
from api.http_errors import BadRequest
from api.result_entries import EntryError, reply_subject_error, validate_entry
from api.routing import route
from core import inbox
from core.inbox import InboxEntry
from core.states import FINAL_STATES, JobState

log = logging.getLogger(__name__)

ACK = b"+ACK"
# Bodies this big (result posts reach 100+ MB) are parsed and validated in a thread, so the event
# loop keeps serving /tasks/ and other posts meanwhile.
LARGE_BODY_BYTES = 1_000_000
ACK_FLUSH_SECONDS = 5
# Results for these are acked and dropped: the job's aggregation has stopped or is stopping.
DISCARD_STATES = FINAL_STATES | {JobState.CANCELING}


def _entries(body: Any) -> list[Any]:
    if isinstance(body, list):
        raise BadRequest.field(
            "results", 'Expected an object {"results": [...]}, got a bare list of results.'
        )
    if not isinstance(body, dict):
        raise BadRequest.field("body", "Expected a JSON object.")
    results = body.get("results")
    if results is None:
        raise BadRequest.field("results", "This field is required.")
    if not isinstance(results, list):
        raise BadRequest.field("results", "Expected a list of items.")
    return results


async def ack(nc: NatsClient, subjects: list[str]) -> None:
    """Publish +ACK to each reply subject, then flush. A lost ack only means a redelivery."""
    if not subjects:
        return
    try:
        for subject in subjects:
            await nc.publish(subject, ACK)
        await nc.flush(timeout=ACK_FLUSH_SECONDS)
    except Exception as err:
        log.warning("acking %d tasks failed (they will be redelivered): %r", len(subjects), err)


def _unavailable(job_id: int) -> JSONResponse:
    body = {"status": "error", "job_id": job_id, "detail": "Result store temporarily unavailable"}
    return JSONResponse(body, status_code=503)


def _validate_all(prefix: str, raw_entries: list[Any]) -> tuple[list[InboxEntry], list[EntryError]]:
    valid: list[InboxEntry] = []
    errors: list[EntryError] = []
    for index, raw in enumerate(raw_entries):
        checked = validate_entry(prefix, index, raw)
        if isinstance(checked, InboxEntry):
            valid.append(checked)
        else:
            errors.extend(checked)
    return valid, errors


async def post_results(request: Request, job_id: int) -> JSONResponse:
    ctx = get_context(request)
    try:
        job = await worker_job(request, job_id)
    except (psycopg.OperationalError, PoolTimeout):
        return _unavailable(job_id)
    raw = await request.body()
    large = len(raw) >= LARGE_BODY_BYTES
    body = await asyncio.to_thread(parse_json, raw) if large else parse_json(raw)
    raw_entries = _entries(body)
    if job.status in DISCARD_STATES or job.consumer is None:
        return await _discard(request, job_id, job.status, raw_entries, None)
    prefix = ctx.settings.jobs.names.ack_prefix(job_id, job.consumer)

    if large:
        valid, errors = await asyncio.to_thread(_validate_all, prefix, raw_entries)
    else:
        valid, errors = _validate_all(prefix, raw_entries)
    try:
        async with ctx.connection() as conn, conn.transaction():
            # The status read above is only a fast path: a cancel or a new run can land after
            # it, so the job row is read again FOR SHARE before the insert: a status change
            # waits for these rows to commit (the cleanup after it removes them) or is seen.
            state = await job_store.run_state(conn, job_id, share=True)
            accepting = state.status not in DISCARD_STATES and state.consumer == job.consumer
            row_ids = await inbox.store(conn, job_id, valid) if accepting else None
    except (psycopg.OperationalError, PoolTimeout):
        return _unavailable(job_id)
    if row_ids is None:
        return await _discard(request, job_id, state.status, raw_entries, None)
    await ack(ctx.resources.nats, [entry.reply_subject for entry in valid])
    if job.pipeline_id is not None:
        await ctx.liveness.pipeline_seen(job.pipeline_id, job.project_id)

    tasks = [
        {"reply_subject": entry.reply_subject, "status": "queued", "task_id": str(row_id)}
        for entry, row_id in zip(valid, row_ids, strict=True)
    ]
    answer: dict[str, Any] = {"status": "accepted", "job_id": job_id, "results_queued": len(tasks)}
    if not errors:
        return JSONResponse({**answer, "tasks": tasks})
    bad = sorted({e.index for e in errors})
    return JSONResponse(
        {
            **answer,
            "status": "partial" if tasks else "rejected",
            "tasks": tasks,
            "detail": (
                f"{len(bad)} of {len(raw_entries)} results are invalid (first: "
                f"{errors[0].field}: {errors[0].message}); the {len(tasks)} valid ones were queued"
            ),
            "field": errors[0].field,
            "errors": [{"index": e.index, "field": e.field, "message": e.message} for e in errors],
        },
        status_code=400,
    )


async def _discard(
    request: Request, job_id: int, status: JobState, raw_entries: list[Any], prefix: str | None
) -> JSONResponse:
    """Late results (after cancel or completion): ack them so they stop coming back, keep none."""
    ctx = get_context(request)
    names = ctx.settings.jobs.names
    prefix = prefix or f"$JS.ACK.{names.stream(job_id)}."
    subjects = [
        raw["reply_subject"]
        for index, raw in enumerate(raw_entries)
        if isinstance(raw, dict)
        and reply_subject_error(prefix, index, raw.get("reply_subject")) is None
    ]
    await ack(ctx.resources.nats, subjects)
    async with ctx.connection() as conn:
        await job_store.append_log(
            conn, job_id, f"Discarded {len(raw_entries)} results posted while the job is {status}"
        )
    tasks = [{"reply_subject": s, "status": "discarded", "task_id": ""} for s in subjects]
    return JSONResponse(
        {"status": "discarded", "job_id": job_id, "results_queued": 0, "tasks": tasks}
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/jobs")
    route(r, "POST", "/{job_id}/result/", post_results)
    return r
