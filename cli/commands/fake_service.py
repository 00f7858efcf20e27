"""``antenna-jobs fake-service``: serve the fake push-mode processing service until stopped."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn

from cli.fakes.service import FakeServiceConfig, create_fake_service


def fake_service(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 2000,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    latency: Annotated[float, typer.Option(min=0, help="Seconds per /process request")] = 0.0,
    error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of /process requests answered 500")
    ] = 0.0,
    pipeline: Annotated[
        list[str] | None, typer.Option(help="Pipeline slug listed by /info (repeatable)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic results")] = 0,
) -> None:
    """A push-mode processing service for SYNC_API jobs: /info, /readyz, /process."""
    config = FakeServiceConfig(
        latency=latency,
        error_rate=error_rate,
        seed=seed,
        pipelines=pipeline or ["fake-pipeline"],
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_fake_service(config),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    typer.echo(f"fake processing service on http://{host}:{port}", err=True)
    asyncio.run(server.serve())
