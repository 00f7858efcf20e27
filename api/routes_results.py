"""``POST /api/v2/jobs/{id}/result/``: store posted results durably, then ack their tasks.

Order matters: a task is acked only after its result is committed to ``result_inbox``, so a crash
between the two makes NATS redeliver a task whose result is already stored (the aggregator
dedupes), never lose one. Valid entries are kept even when others in the request are invalid.

Memory stays a small multiple of the body (the ADC posts up to 150 MB): the body is read into one
buffer (api.bodies), cut into per-entry views of it (api.result_body), each entry's score and
logit arrays cut out as views (core/result_arrays.py) and the small rest validated and
re-serialised on its own (api.result_entries); the arrays are copied to PostgreSQL as they came.
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
from antenna_db.job_store import WorkerView
from api.access import worker_job
from api.auth import caller_of
from api.bodies import read_body
from api.context import ApiContext, get_context
from api.http_errors import RESULT_STORE_UNAVAILABLE, unavailable
from api.result_body import RawEntry, split_results
from api.result_entries import (
    BIG_ENTRY_BYTES,
    EntryError,
    ValidEntry,
    reply_subject_error,
    reply_subject_of,
    validate_entry,
)
from api.routing import route
from api.worker_tally import identity
from core import tracing
from core.errors import JobNotFound, TaskQueueUnavailable
from core.metrics import RESULTS_RECEIVED
from core.states import ACTIVE_STATES, JobState
from storage import inbox
from storage.inbox import InboxEntry

log = logging.getLogger(__name__)

ACK = b"+ACK"
ACK_FLUSH_SECONDS = 5
# Results are stored only while the job is served tasks; for any other status (not started yet,
# CANCELING, final) they are acked and dropped: nothing would ever drain them.
REFUSED_STATES = frozenset(JobState) - ACTIVE_STATES
_ACCEPTING = frozenset(str(state) for state in ACTIVE_STATES)


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


async def _validate_all(
    ctx: ApiContext, job_id: int, run_id: str, prefix: str, entries: list[RawEntry]
) -> tuple[list[InboxEntry], list[EntryError]]:
    """Each entry on its own: validated, matched with its task's image, then serialised. A big
    entry (a 29,176-class result is 2.7 MB, 50 ms of work) is handled in a thread, so the event
    loop keeps serving /tasks/ and other posts meanwhile: it takes the GIL back within the switch
    interval (0.5 ms, set in api/server.py) whenever it has work, as msgspec and the array encoding
    run in short C calls."""
    checked: list[tuple[int, ValidEntry]] = []
    errors: list[EntryError] = []
    for index, raw in enumerate(entries):
        if len(raw) >= BIG_ENTRY_BYTES:
            found = await asyncio.to_thread(validate_entry, prefix, index, raw)
        else:
            found = validate_entry(prefix, index, raw)
        if isinstance(found, ValidEntry):
            checked.append((index, found))
        else:
            errors.extend(found)
    tasks = await ctx.task_images.images(job_id, run_id, [e.reply_subject for _, e in checked])
    valid: list[InboxEntry] = []
    for (index, good), task_image in zip(checked, tasks, strict=True):
        mismatch = good.task_mismatch(index, task_image)
        if mismatch is not None:
            errors.append(mismatch)
            continue
        if good.is_big():
            valid.append(await asyncio.to_thread(good.inbox_entry, task_image))
        else:
            valid.append(good.inbox_entry(task_image))
    errors.sort(key=lambda e: -1 if e.index is None else e.index)
    return valid, errors


async def _store(
    ctx: ApiContext, job_id: int, run_id: str, valid: list[InboxEntry]
) -> tuple[list[int] | None, JobState]:
    """Store the entries while the job still accepts them for this run: the job row is read
    FOR SHARE first, so a status change (a cancel) or a new run waits for these rows to commit
    (its clean-up then removes them) or is seen here and nothing is stored. A usual post is one
    statement; a big one a transaction of pipelined inserts and one COPY (storage/inbox.py)."""
    async with ctx.connection() as conn:
        if valid and inbox.one_statement(valid):
            found, ids = await inbox.store_for_run(conn, job_id, run_id, _ACCEPTING, valid)
            if found is None:
                raise JobNotFound(job_id)
            return ids, JobState(found)
        async with conn.transaction():
            state = await job_store.run_state(conn, job_id, share=True)
            if state.status in REFUSED_STATES or state.run_id != run_id:
                return None, state.status
            return await inbox.store(conn, job_id, valid), state.status


async def post_results(request: Request, job_id: int) -> JSONResponse:
    """Antenna's order: who may post (401/403/404) before the body is read."""
    ctx = get_context(request)
    try:
        job = await worker_job(request, job_id)
    except (psycopg.OperationalError, PoolTimeout):
        return unavailable(RESULT_STORE_UNAVAILABLE, job_id=job_id)
    # The ADC sends no trace headers: the request joins its job run's trace by job id.
    attributes = tracing.job_attributes(job_id, job.project_id, job.pipeline_slug, job.pipeline_id)
    with tracing.run_span("POST /api/v2/jobs/{id}/result/", attributes, job.trace_context) as span:
        response = await _post(request, ctx, job_id, job)
        span.set_attribute("http.response.status_code", response.status_code)
        return response


async def _post(request: Request, ctx: ApiContext, job_id: int, job: WorkerView) -> JSONResponse:
    raw = await read_body(request)
    # Cutting a 150 MB envelope into entries is ~0.2 s of C: off the loop, like the entries.
    body = (
        await asyncio.to_thread(split_results, raw)
        if len(raw) >= BIG_ENTRY_BYTES
        else (split_results(raw))
    )
    if job.status in REFUSED_STATES or job.consumer is None or job.run_id is None:
        return await _discard(ctx, job_id, job.status, body.entries)
    prefix = ctx.settings.jobs.names.ack_prefix(job_id, job.consumer)

    try:
        valid, errors = await _validate_all(ctx, job_id, job.run_id, prefix, body.entries)
    except TaskQueueUnavailable:
        return unavailable(RESULT_STORE_UNAVAILABLE, job_id=job_id)
    errors += [EntryError(None, field, message) for field, message in body.problems]
    count = len(body.entries)
    who = identity(request, caller_of(request), body.client_info)
    tracing.tag({**who.attributes(), "antenna_jobs.results_posted": count})
    # Only the validated payloads are needed from here on: let the body buffer go.
    del raw, body
    try:
        row_ids, status = await _store(ctx, job_id, job.run_id, valid)
    except (psycopg.OperationalError, PoolTimeout):
        return unavailable(RESULT_STORE_UNAVAILABLE, job_id=job_id)
    if row_ids is None:
        # Still active: a new run took the job meanwhile. Its consumer has the name these
        # subjects carry, so acking them could ack the new run's messages: none is acked.
        subjects = [entry.reply_subject for entry in valid] if status in REFUSED_STATES else []
        return await _discarded(ctx, job_id, status, subjects, count)
    RESULTS_RECEIVED.inc(len(row_ids))
    # The inbox rows this request stored: the save span that stores them names them too.
    tracing.tag({"antenna_jobs.inbox_row_ids": row_ids})
    ctx.workers.posted(who, job_id, job.run_id, len(row_ids))
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
    bad = {e.index for e in errors if e.index is not None}
    return JSONResponse(
        {
            **answer,
            "status": "partial" if tasks else "rejected",
            "tasks": tasks,
            "detail": (
                f"{len(bad)} of {count} results are invalid (first: "
                f"{errors[0].field}: {errors[0].message}); the {len(tasks)} valid ones were queued"
            ),
            "field": errors[0].field,
            "errors": [{"index": e.index, "field": e.field, "message": e.message} for e in errors],
        },
        status_code=400,
    )


async def _discard(
    ctx: ApiContext, job_id: int, status: JobState, entries: list[RawEntry]
) -> JSONResponse:
    """Results for a job that is not active: ack them so they stop coming back, keep none.
    Only subjects of the job's stream are acked: while the job is not active, the only
    consumer that can take them is that of the run that is ending (or none)."""
    prefix = ctx.settings.jobs.names.ack_prefix(job_id)
    subjects = []
    for index, entry in enumerate(entries):
        subject = reply_subject_of(entry)
        if reply_subject_error(prefix, index, subject) is None:
            subjects.append(subject)
    return await _discarded(ctx, job_id, status, subjects, len(entries))


async def _discarded(
    ctx: ApiContext, job_id: int, status: JobState, subjects: list[str], count: int
) -> JSONResponse:
    await ack(ctx.resources.nats, subjects)
    # A worker that keeps posting to a finished job must not write a log row per post.
    if ctx.log_throttle.ready(("results-discarded", job_id)):
        async with ctx.connection() as conn:
            await job_store.append_log(
                conn,
                job_id,
                f"Discarded {count} results posted while the job is {status}"
                " (logged at most once a minute)",
            )
    tasks = [{"reply_subject": s, "status": "discarded", "task_id": ""} for s in subjects]
    return JSONResponse(
        {"status": "discarded", "job_id": job_id, "results_queued": 0, "tasks": tasks}
    )


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/jobs")
    route(r, "POST", "/{job_id}/result/", post_results)
    return r
