"""``antenna-jobs worker``: migrate, connect, run the workers until SIGINT/SIGTERM, shut down.

Workers and clients are shut down explicitly before returning (sdk-python #300: a process that
leaves them to interpreter exit can abort with SIGABRT after all its work is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from temporalio.worker import Worker

from core import tracing
from core.settings import Settings
from core.temporal_client import connect_temporal, metrics_runtime
from job_control.metrics import MetricsServer
from job_control.overview import OverviewSource
from worker.app import build_workers
from worker.resources import Resources
from worker.schedules import ensure_reconcile_schedule
from worker.schema_watch import SchemaWatch
from worker.settings_guard import check_task_queues, fingerprint_of, recheck_after_start

log = logging.getLogger("antenna_jobs.worker")


async def run_worker(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until the calling task is cancelled), then stop cleanly."""
    # Before anything is migrated or polled: a worker of other settings on this task queue
    # (another deployment's) makes this one refuse to start (worker/settings_guard.py).
    fingerprint = await fingerprint_of(settings)
    identity = fingerprint.identity()
    tracing.configure(settings.tracing, "antenna-jobs-worker")
    client = await connect_temporal(
        settings.temporal, runtime=metrics_runtime(settings.worker.metrics_bind)
    )
    await check_task_queues(client, settings, fingerprint)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    resources = await Resources.open(settings)
    metrics: MetricsServer | None = None
    try:
        metrics = start_metrics(settings, resources)
        schema = SchemaWatch(settings.database, settings.jobs.schema_check_interval.total_seconds())
        workers = build_workers(
            client, settings, resources, request_schema_check=schema.request, identity=identity
        )
        await ensure_reconcile_schedule(client, settings)
        runs = [asyncio.create_task(w.run()) for w in workers]
        # Antenna's schema again on a schedule (the start check is Resources.open's).
        checks = asyncio.create_task(schema.run())
        stopped = asyncio.create_task(stop.wait())
        try:
            # Two workers of other settings that started together both passed the first check.
            await recheck_after_start(client, settings, fingerprint, identity)
            log.info(
                "workers polling %s and %s as %r",
                settings.jobs.task_queue,
                settings.jobs.long_task_queue,
                identity,
            )
            if ready is not None:
                ready.set()
            # A worker that dies (e.g. the server is unreachable for good) ends the process too.
            await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            checks.cancel()
            log.info("shutting down workers")
            await asyncio.shield(_shutdown(workers, runs))
        for task in runs:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if metrics is not None:
            await asyncio.to_thread(metrics.stop)
        await asyncio.shield(resources.close())
        tracing.shutdown()


def start_metrics(settings: Settings, resources: Resources) -> MetricsServer | None:
    """The worker's /metrics on settings.worker.metrics_port: antenna-jobs' figures, and the
    Temporal SDK's (read from its own endpoint) when metrics_bind is set."""
    port = settings.worker.metrics_port
    if port is None:
        return None
    source = OverviewSource(
        resources.pool,
        resources.js,
        settings.jobs.names,
        workers_window=settings.jobs.workers_seen_window.total_seconds(),
    )
    server = MetricsServer.start(
        settings.worker.metrics_host, port, source, temporal_bind=settings.worker.metrics_bind
    )
    log.info("metrics at http://%s:%s/metrics", settings.worker.metrics_host, server.port)
    return server


async def _shutdown(workers: list[Worker], runs: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await asyncio.gather(*runs, return_exceptions=True)
