"""Job endpoints: the list (also the ADC's claim poll), create, detail, run, cancel, retry,
pause and resume."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from antenna_db import job_listing, pipelines
from antenna_db.job_listing import JobFilters
from antenna_db.job_store import JobRecord
from api.access import may_create, runnable_job, viewer, visible_job
from api.auth import caller_of
from api.bodies import json_object
from api.context import ApiContext, get_context
from api.http_errors import BadRequest
from api.job_bodies import (
    CreateInternalJobBody,
    CreateMlJobBody,
    JobKindBody,
    ReasonBody,
    RetryBody,
    parse,
)
from api.pagination import int_param, page_body, page_of, text_param, truthy
from api.routing import route
from core import worker_calls
from core.errors import JobNotFound
from core.states import DispatchMode, JobState, JobType
from storage import job_runs, job_workers

DEFAULT_PAGE_SIZE = 10
# Jobs the fair-share listing sorts at most (the ADC reads the first page, of one job).
MAX_SORTED = 1000
DEFAULT_LOGS_LIMIT = 1000
MAX_LOGS_LIMIT = 5000
RUN_ML_JOB = "run_ml_job"


def _filters(request: Request, ids_only: bool) -> JobFilters:
    query = request.query_params
    project_id = int_param(request, "project_id", minimum=0)
    if project_id is None:
        project_id = int_param(request, "project", minimum=0)
    slugs: list[str] | None = None
    if "pipeline__slug__in" in query:
        listed = text_param(request, "pipeline__slug__in") or ""
        slugs = [s.strip() for s in listed.split(",") if s.strip()]
    elif "pipeline__slug" in query:
        slugs = [text_param(request, "pipeline__slug") or ""]
    mode: DispatchMode | None = None
    if query.get("dispatch_mode"):
        try:
            mode = DispatchMode(query["dispatch_mode"])
        except ValueError:
            raise BadRequest.field("dispatch_mode", "Select a valid choice.") from None
    statuses: list[str] | None = None
    if query.get("status"):
        statuses = [s.strip().upper() for s in query["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in JobState.__members__]
        if unknown:
            raise BadRequest.field("status", f"Select a valid choice: {', '.join(unknown)}.")
    return JobFilters(
        project_id=project_id,
        pipeline_id=int_param(request, "pipeline", minimum=0),
        pipeline_slugs=slugs,
        dispatch_mode=mode,
        statuses=statuses,
        incomplete_only=truthy(query.get("incomplete_only")),
        with_pipeline=ids_only,
        viewer=viewer(request),
        # The claim poll offers only jobs the caller may fetch tasks of: the ADC takes the
        # first job listed, and one it may not run would answer 403 for ever.
        runner=viewer(request) if ids_only else None,
    )


async def list_jobs(request: Request) -> JSONResponse:
    """DRF page of jobs; ``ids_only=1`` gives ``{id, pipeline_slug}``, 1 a page: the least-served
    jobs first under fair share, else in random order (one random draw per poll, #1261)."""
    ctx = get_context(request)
    ids_only = truthy(request.query_params.get("ids_only"))
    filters = _filters(request, ids_only)
    page = page_of(request, 1 if ids_only else DEFAULT_PAGE_SIZE)
    fair = ids_only and ctx.fair_share.enabled
    polled = filters.pipeline_slugs
    async with ctx.connection() as conn:
        count = await job_listing.count_jobs(conn, filters)
        if fair:
            candidates = await job_listing.list_job_candidates(conn, filters, MAX_SORTED)
            if polled:
                # Only pipelines that exist are remembered as polled for.
                polled = await pipelines.existing_slugs(conn, polled)
        elif ids_only:
            results = await job_listing.list_job_ids(conn, filters, page)
        else:
            results = await job_listing.list_jobs(conn, filters, page)
    if fair and (polled or not filters.pipeline_slugs):
        may_run = await ctx.permissions.projects_with(caller_of(request), RUN_ML_JOB)
        ctx.fair_share.listed(polled, caller_of(request).user_id, may_run)
    if fair:
        slugs = {row["id"]: row["pipeline_slug"] for row in candidates}
        ordered = await ctx.fair_share.order([(row["id"], row["project_id"]) for row in candidates])
        results = [
            {"id": job_id, "pipeline_slug": slugs[job_id]}
            for job_id in ordered[page.offset : page.offset + page.limit]
        ]
    if filters.pipeline_slugs:
        await ctx.liveness.pipelines_seen(filters.pipeline_slugs, filters.project_id)
    elif filters.project_id is not None:
        await ctx.liveness.project_seen(filters.project_id)
    return JSONResponse(page_body(request, page, count, results))


def _start_now(request: Request, kind: JobKindBody) -> bool:
    return truthy(request.query_params.get("start_now")) or kind.start_now is True


async def create_job(request: Request) -> JSONResponse:
    ctx = get_context(request)
    body = await json_object(request)
    kind = parse(JobKindBody, body)
    start = _start_now(request, kind)
    if kind.job_type != JobType.ML:
        internal = parse(CreateInternalJobBody, body).new_job(kind.job_type)
        await may_create(request, internal.project_id, kind.job_type, start)
        job = await ctx.actions.create_internal(internal, start=start)
        return JSONResponse(await _summary(request, job), status_code=201)
    ml = parse(CreateMlJobBody, body)
    pipeline = ml.pipeline_ref()
    if isinstance(pipeline, int):
        async with ctx.connection() as conn:
            slug = await pipelines.slug_of(conn, pipeline)
        if slug is None:
            raise BadRequest.field("pipeline", f"no pipeline with id {pipeline}")
        pipeline = slug
    await may_create(request, ml.project_id, JobType.ML, start)
    job = await ctx.actions.create(ml.new_job(pipeline), start=start)
    return JSONResponse(await _summary(request, job), status_code=201)


async def job_detail(request: Request, job_id: int) -> JSONResponse:
    """The job, its progress JSON and its newest log lines (``?logs_limit=``, max 5000)."""
    ctx = get_context(request)
    limit = int_param(request, "logs_limit", minimum=1, maximum=MAX_LOGS_LIMIT)
    await visible_job(request, job_id)
    view = await ctx.actions.view(job_id, limit or DEFAULT_LOGS_LIMIT)
    body = await _summary(request, view.job)
    body.update(await _workers(ctx, job_id))
    lines = [
        f"[{entry['created_at'].isoformat()}] {entry['level']} {entry['message']}"
        for entry in view.logs
    ]
    body["logs"] = {
        "stdout": lines,
        "stderr": [
            line
            for line, entry in zip(lines, view.logs, strict=True)
            if entry["level"] in {"ERROR", "CRITICAL"}
        ],
    }
    return JSONResponse(body)


async def _workers(ctx: ApiContext, job_id: int) -> dict[str, Any]:
    """The workers of the job's current run (serving now: called within the window), their
    last call and throughput, and the ETA at the recent rate of those serving it."""
    window = ctx.settings.jobs.workers_seen_window.total_seconds()
    async with ctx.connection() as conn:
        workers = (await job_workers.of_jobs(conn, [job_id])).get(job_id, [])
        run = await job_runs.get(conn, job_id) if workers else None
    rate = worker_calls.recent_rate(workers, window)
    remaining = run.counters.remaining if run is not None else 0
    eta = worker_calls.eta(remaining, rate) if run is not None and run.counters.total else None
    return {
        "workers": [{**w.brief(), "serving": w.idle <= window} for w in workers],
        "images_per_second": round(rate, 3),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


async def run_job(request: Request, job_id: int) -> JSONResponse:
    await runnable_job(request, job_id)
    job = await get_context(request).actions.run(job_id)
    return JSONResponse(await _summary(request, job))


async def cancel_job(request: Request, job_id: int) -> JSONResponse:
    await runnable_job(request, job_id)
    job = await get_context(request).actions.cancel(job_id, reason="cancelled through the API")
    return JSONResponse(await _summary(request, job))


async def retry_job(request: Request, job_id: int) -> JSONResponse:
    """Antenna's retry; ``{"failed_only": true}`` (or ``?failed_only=1``): a new run of only the
    images that failed in the previous one."""
    body = parse(RetryBody, await json_object(request))
    failed_only = body.failed_only or truthy(request.query_params.get("failed_only"))
    await runnable_job(request, job_id)
    job = await get_context(request).actions.retry(job_id, failed_only=failed_only)
    return JSONResponse(await _summary(request, job))


async def pause_job(request: Request, job_id: int) -> JSONResponse:
    """No more tasks for the job until it is resumed; results in flight are still saved."""
    return await _set_paused(request, job_id, paused=True)


async def resume_job(request: Request, job_id: int) -> JSONResponse:
    return await _set_paused(request, job_id, paused=False)


async def _set_paused(request: Request, job_id: int, *, paused: bool) -> JSONResponse:
    body = parse(ReasonBody, await json_object(request))
    await runnable_job(request, job_id)
    actions = get_context(request).actions
    change, word = (actions.pause, "paused") if paused else (actions.resume, "resumed")
    job = await change(job_id, reason=body.reason or f"{word} through the API")
    return JSONResponse(await _summary(request, job))


async def _summary(request: Request, job: JobRecord) -> dict[str, Any]:
    async with get_context(request).connection() as conn:
        body = await job_listing.job_summary(conn, job.id, viewer(request))
    if body is None:
        raise JobNotFound(job.id)
    return body


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/jobs")
    route(r, "GET", "/", list_jobs)
    route(r, "POST", "/", create_job, status_code=201)
    route(r, "GET", "/{job_id}/", job_detail)
    route(r, "POST", "/{job_id}/run/", run_job)
    route(r, "POST", "/{job_id}/cancel/", cancel_job)
    route(r, "POST", "/{job_id}/retry/", retry_job)
    route(r, "POST", "/{job_id}/pause/", pause_job)
    route(r, "POST", "/{job_id}/resume/", resume_job)
    return r
