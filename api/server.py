"""Running the API under uvicorn (``antenna-jobs api [--port 8000] [--workers N]``)."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from core.settings import Settings

# The ADC's 100+ MB result posts take a while to read; keep idle keep-alives short.
_KEEP_ALIVE_SECONDS = 30
# Big result posts are validated in a thread (api/routes_results.py); the event loop's thread
# takes the GIL back after at most this long, many times per request: at Python's default (5 ms)
# a /tasks/ call beside a 64 MB post took 658 ms at the median, at 0.5 ms 20 ms.
_SWITCH_INTERVAL_SECONDS = 0.0005


def _serving_process() -> None:
    sys.setswitchinterval(_SWITCH_INTERVAL_SECONDS)


def app_from_environment() -> FastAPI:
    """The app of one of several worker processes: each reads its settings from the
    environment it inherited (uvicorn imports this by name in each process). The Temporal SDK's
    metrics endpoint is one port: not opened by any of several processes."""
    settings = Settings()
    if settings.api.temporal_metrics_bind is not None:
        api = settings.api.model_copy(update={"temporal_metrics_bind": None})
        settings = settings.model_copy(update={"api": api})
    return create_app(settings)


def serve(
    settings: Settings, port: int | None = None, host: str | None = None, workers: int = 1
) -> None:
    """Serve until interrupted. ``workers`` > 1: that many processes share the port (uvicorn's
    supervisor), each with its own pools; nothing the API keeps in memory is needed for
    correctness across them (every decision is made in PostgreSQL or NATS)."""
    host = host or settings.api.host
    port = port or settings.api.port
    _serving_process()
    if workers > 1:
        uvicorn.run(
            "api.server:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        )
        return
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
    )
