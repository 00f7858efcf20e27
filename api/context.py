"""What a request handler can reach: the open clients and the per-process helpers built on them."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from fastapi import Request
from nats.aio.client import Client as NatsClient
from temporalio.client import Client

from api.fair_share import FairShare
from api.liveness import Liveness, Throttle
from api.task_fetcher import TaskFetcher
from api.task_images import TaskImages
from api.tokens import PermissionCache, TokenVerifier
from api.worker_tally import WorkerTally
from core.settings import Settings
from job_control.actions import JobActions
from job_control.overview import OverviewSource
from storage.pool import Pool

# How long a request waits for a pooled connection before answering 503.
DB_TIMEOUT_SECONDS = 10.0
LOG_THROTTLE_SECONDS = 60.0


@dataclass(frozen=True)
class ApiResources:
    """Connections the API uses; opened by the app's lifespan, or by a test and passed in."""

    pool: Pool
    nats: NatsClient
    temporal: Client


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    resources: ApiResources
    actions: JobActions
    tokens: TokenVerifier
    permissions: PermissionCache
    tasks: TaskFetcher
    task_images: TaskImages
    liveness: Liveness
    fair_share: FairShare
    # Which workers called, per job run: batched into job_workers (api/worker_tally.py).
    workers: WorkerTally
    db_timeout: float
    # Limits job log lines that idle polling would otherwise repeat every few seconds.
    log_throttle: Throttle
    # What /metrics reports of the whole system, read on scrape (cached a few seconds).
    overview: OverviewSource

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A pooled connection, or PoolTimeout (answered 503) after ``db_timeout``."""
        return self.resources.pool.connection(timeout=self.db_timeout)

    @classmethod
    def build(
        cls, settings: Settings, resources: ApiResources, db_timeout: float = DB_TIMEOUT_SECONDS
    ) -> ApiContext:
        return cls(
            settings=settings,
            resources=resources,
            actions=JobActions(resources.pool, resources.temporal, settings),
            tokens=TokenVerifier(resources.pool, db_timeout),
            permissions=PermissionCache(resources.pool, db_timeout),
            tasks=TaskFetcher(resources.nats, settings.nats, settings.jobs.names),
            task_images=TaskImages(
                resources.nats.jetstream(timeout=settings.nats.request_timeout.total_seconds())
            ),
            liveness=Liveness(resources.pool, db_timeout),
            fair_share=FairShare(resources.pool, resources.nats, settings, db_timeout),
            workers=WorkerTally(resources.pool, db_timeout),
            db_timeout=db_timeout,
            log_throttle=Throttle(LOG_THROTTLE_SECONDS),
            overview=OverviewSource(
                resources.pool,
                resources.nats.jetstream(timeout=settings.nats.request_timeout.total_seconds()),
                settings.jobs.names,
                workers_window=settings.jobs.workers_seen_window.total_seconds(),
            ),
        )


def get_context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.context)
