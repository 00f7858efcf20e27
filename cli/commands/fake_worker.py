"""``antenna-jobs fake-worker``: run the fake ADC worker until stopped; print what it posted.

The token comes from ANTENNA_JOBS_API_TOKEN (settings) unless ``--token`` is given; the
environment is preferred, since a command line is visible to every user in ``ps``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Annotated

import typer

from cli.commands.context import fail, load_settings
from cli.fakes.worker import FakeWorker, FakeWorkerConfig


def fake_worker(
    api_url: Annotated[
        str | None, typer.Option(help="API server URL (default: ANTENNA_JOBS_API_URL)")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help=(
                "API token. Prefer the environment variable ANTENNA_JOBS_API_TOKEN (the default"
                " source): a token on the command line is visible to every user in `ps`."
            )
        ),
    ] = None,
    delay: Annotated[float, typer.Option(min=0, help="Seconds of 'inference' per batch")] = 0.0,
    error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of images reported as errors")
    ] = 0.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent task fetchers")] = 4,
    batch_size: Annotated[int, typer.Option(min=1, help="Tasks asked for per fetch")] = 24,
    pipeline: Annotated[
        list[str] | None, typer.Option(help="Only jobs of this pipeline slug (repeatable)")
    ] = None,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Exit when no job has work")] = False,
    max_idle: Annotated[
        float | None, typer.Option(min=0, help="Exit after this many seconds without work")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic results")] = 0,
) -> None:
    """Behave like the ADC worker: fetch tasks over HTTP, post synthetic results."""
    settings = load_settings()
    key = token or settings.api.token
    if not key:
        fail("no API token: set ANTENNA_JOBS_API_TOKEN (`antenna-jobs token create` makes one)")
    config = FakeWorkerConfig(
        api_url=api_url or settings.api.url,
        token=key,
        delay=delay,
        error_rate=error_rate,
        concurrency=concurrency,
        batch_size=batch_size,
        pipelines=pipeline or [],
        poll_interval=poll_interval,
        max_idle=0.0 if once else max_idle,
        seed=seed,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    totals = asyncio.run(_run(FakeWorker(config)))
    typer.echo(json.dumps(totals))


async def _run(worker: FakeWorker) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    return await worker.run()
