"""The FastAPI application: job actions and the ADC worker-facing endpoints under /api/v2/.

``create_app(settings)`` opens its own connections in its lifespan (migrate, Postgres pool, NATS,
Temporal) and closes them on shutdown; ``create_app(settings, resources=...)`` uses connections a
caller (a test) already opened and leaves closing them to that caller.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import nats
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from antenna_db import cachalot, schema_check
from antenna_db.schema import ANTENNA
from api import http_errors, routes_jobs, routes_projects, routes_results, routes_tasks
from api.auth import forbidden, require_caller
from api.context import DB_TIMEOUT_SECONDS, ApiContext, ApiResources, get_context
from api.request_metrics import RequestMetrics
from core import tracing
from core.settings import Settings
from core.temporal_client import connect_temporal, metrics_runtime
from job_control import metrics
from job_control.overview import Overview
from storage.migrate import migrate
from storage.pool import open_pool

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[ApiResources]:
    """Migrate, then open the pool, one NATS connection and the Temporal client."""
    async with AsyncExitStack() as stack:
        applied = await migrate(settings.database, ANTENNA)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        # Antenna's tables as the manifest has them, or no start (each difference named).
        await schema_check.require_compatible(settings.database.url, settings.database.schema_name)
        pool = await open_pool(settings.database)
        stack.push_async_callback(pool.close)
        nc = await nats.connect(
            settings.nats.url,
            name="antenna-jobs-api",
            connect_timeout=5,
            # Keep trying forever: /tasks/ answers 503 while disconnected, never crashes.
            max_reconnect_attempts=-1,
        )
        stack.push_async_callback(nc.drain)
        if tracing.configure(settings.tracing, "antenna-jobs-api") is not None:
            stack.callback(tracing.shutdown)
        temporal = await connect_temporal(
            settings.temporal, runtime=metrics_runtime(settings.api.temporal_metrics_bind)
        )
        yield ApiResources(pool=pool, nats=nc, temporal=temporal)


def create_app(
    settings: Settings,
    resources: ApiResources | None = None,
    *,
    db_timeout: float = DB_TIMEOUT_SECONDS,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(cachalot.installed(settings.antenna.cache_url))
            opened = resources
            if opened is None:
                opened = await stack.enter_async_context(open_resources(settings))
            context = ApiContext.build(settings, opened, db_timeout)
            stack.push_async_callback(context.tasks.close)
            stack.push_async_callback(context.workers.close)
            app.state.context = context
            yield

    docs = settings.api.docs
    app = FastAPI(
        title="antenna-jobs",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    http_errors.install(app)
    # Latency and status of every request by route (antenna_jobs_api_request_seconds).
    app.add_middleware(RequestMetrics)
    for module in (routes_jobs, routes_tasks, routes_results, routes_projects):
        app.include_router(module.router(), dependencies=[Depends(require_caller)])
    # Outside /api/ and without a token, for load balancers and compose health checks.
    app.add_api_route("/healthz", _health, methods=["GET"], include_in_schema=False)
    # Prometheus, outside /api/: with the scrape secret or a superuser's token (_may_scrape).
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    return app


async def _health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _may_scrape(request: Request) -> None:
    """``Authorization: Token <ANTENNA_JOBS_API_METRICS_TOKEN>`` (Prometheus' scrape secret), or
    a superuser's Antenna token; else 401 (no or a bad token) or 403 (a token of anyone else)."""
    secret = get_context(request).settings.api.metrics_token
    parts = request.headers.get("authorization", "").split()
    if (
        secret
        and len(parts) == 2
        and parts[0].lower() == "token"
        and hmac.compare_digest(parts[1].encode(), secret.encode())
    ):
        return
    who = await require_caller(request)
    if not who.is_superuser:
        raise forbidden("Metrics need the scrape token or a superuser's token.")


async def _metrics(request: Request) -> Response:
    """This process's counters and the system overview; without the overview if the database
    or NATS does not answer (the counters still do)."""
    await _may_scrape(request)
    overview: Overview | None = None
    try:
        overview = await asyncio.wait_for(
            get_context(request).overview.get(), metrics.OVERVIEW_TIMEOUT
        )
    except Exception as err:
        log.warning("metrics: no overview (%s)", err)
    bind = get_context(request).settings.api.temporal_metrics_bind
    # In a thread: the Temporal SDK's figures are read from its endpoint over HTTP.
    body = await asyncio.to_thread(metrics.render, overview, temporal_bind=bind)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
