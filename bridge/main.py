"""``antenna-jobs bridge``: Antenna's Run/Retry buttons start our workflows.

Antenna's web process writes the job row (PENDING, a fresh task id) and sends ``run_job`` to its
broker's ``jobs`` queue; this process consumes those messages and starts (or joins) the job's
workflow through JobActions.start_for_antenna. Nothing in Antenna changes, but no Antenna Celery
worker may consume the same queue.

The pool is closed explicitly before returning; the SDK's Client has nothing to close, and the
console script leaves through os._exit once the Temporal runtime is loaded (sdk-python #300).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from antenna_db import cachalot
from bridge.consumer import RunJobConsumer
from core import tracing
from core.db import open_pool
from core.settings import Settings
from core.temporal_client import connect_temporal
from job_control.actions import JobActions

log = logging.getLogger("antenna_jobs.bridge")


async def run_bridge(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Consume run_job messages until SIGINT/SIGTERM (or until cancelled), then stop cleanly.

    ``ready`` is set once the consumer is registered with the broker (again after a reconnect).
    """
    if settings.antenna.broker_url is None:
        raise ValueError("set ANTENNA_JOBS_ANTENNA_BROKER_URL (Antenna's Celery broker)")
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
        consumer = RunJobConsumer.from_settings(settings.antenna, actions.start_for_antenna)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, consumer.stop)
                installed.append(sig)
        try:
            async with cachalot.installed(settings.antenna.cache_url):
                await consumer.run(ready=ready)
        finally:
            log.info("bridge stopped")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await asyncio.shield(pool.close())
        tracing.shutdown()
