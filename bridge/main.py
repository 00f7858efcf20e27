"""``antenna-jobs bridge``: Antenna's Run/Retry buttons start our workflows.

Antenna's web process writes the job row (PENDING, a fresh task id) and sends ``run_job`` to its
broker's ``jobs`` queue; this process consumes those messages and starts (or joins) the job's
workflow through JobActions.start_for_antenna. Nothing in Antenna changes, but no Antenna Celery
worker may consume the same queue (the bridge warns when one does, and reports it).

A message the bridge gives up on gets one ERROR line in its job's log; the bridge's view of the
broker goes to table ``bridge_reports`` (storage/bridge_reports.py) for ``status`` and ``/metrics``.

The pool is closed explicitly before returning; the SDK's Client has nothing to close, and the
console script leaves through os._exit once the Temporal runtime is loaded (sdk-python #300).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import psycopg

from antenna_db import cachalot, job_store, schema_check
from bridge.consumer import RunJobConsumer
from bridge.report import DeadLetter
from core import tracing
from core.settings import Settings
from core.temporal_client import connect_temporal
from job_control.actions import JobActions
from storage import bridge_reports
from storage.bridge_reports import BridgeReport
from storage.pool import Pool, open_pool

log = logging.getLogger("antenna_jobs.bridge")


async def run_bridge(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Consume run_job messages until SIGINT/SIGTERM (or until cancelled), then stop cleanly.

    ``ready`` is set once the consumer is registered with the broker (again after a reconnect).
    """
    settings.antenna.require_broker_url()
    # Antenna's tables as the manifest has them, or no start (each difference named).
    await schema_check.require_compatible(settings.database.url, settings.database.schema_name)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    pool = await open_pool(settings.database)
    try:
        try:
            tracing.configure(settings.tracing, "antenna-jobs-bridge")
            client = await connect_temporal(settings.temporal)
        except RuntimeError as err:  # what the SDK raises for a failed connect
            raise ConnectionError(
                f"cannot reach Temporal at {settings.temporal.address} ({err})"
            ) from err
        actions = JobActions(pool, client, settings)
        hooks = _Hooks(pool)
        consumer = RunJobConsumer.from_settings(
            settings.antenna,
            actions.start_for_antenna,
            on_dead_letter=hooks.dead_lettered,
            on_report=hooks.report,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, consumer.stop)
                installed.append(sig)
        try:
            async with cachalot.installed(settings.antenna.cache_url):
                await consumer.run(ready=ready)
        finally:
            log.info("bridge stopped")
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    hooks.last_report(
                        BridgeReport(
                            queue=settings.antenna.jobs_queue, connected=False, error="stopped"
                        )
                    )
                )
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await asyncio.shield(pool.close())
        tracing.shutdown()


class _Hooks:
    """What the consumer thread hands back to the loop: dead letters and reports."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        # Reports are written one at a time, in the order they were made, and none after the
        # last one (a report the thread made before stopping must not overwrite "stopped").
        self._reporting = asyncio.Lock()
        self._closed = False

    async def dead_lettered(self, letter: DeadLetter) -> None:
        if letter.job_id is None:
            return
        message = (
            f"Antenna's run_job message (task {letter.task_id}) could not be handled after"
            f" {letter.attempts} attempt(s) and was dead-lettered: {letter.reason}."
            " Replay it with `antenna-jobs dead-letters replay --job"
            f" {letter.job_id}` once the cause is fixed"
        )
        try:
            async with self._pool.connection() as conn:
                await job_store.append_log(
                    conn,
                    letter.job_id,
                    message,
                    level="ERROR",
                    context={
                        "celery_task_id": letter.task_id,
                        "attempts": letter.attempts,
                        "dead_lettered": True,
                    },
                )
        except psycopg.errors.ForeignKeyViolation:
            pass  # no such job: the bridge's own log line is all there is

    async def report(self, report: BridgeReport) -> None:
        async with self._reporting:
            if self._closed:
                return
            async with self._pool.connection() as conn:
                await bridge_reports.save(conn, report)

    async def last_report(self, report: BridgeReport) -> None:
        self._closed = True
        async with self._reporting, self._pool.connection() as conn:
            await bridge_reports.save(conn, report)
