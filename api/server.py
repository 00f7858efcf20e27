"""Running the API under uvicorn (``antenna-jobs api [--port 8000] [--workers N]``)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from core.settings import Settings

# The ADC's 100+ MB result posts take a while to read; keep idle keep-alives short.
_KEEP_ALIVE_SECONDS = 30


def app_from_environment() -> FastAPI:
    """The app of one of several worker processes: each reads its settings from the
    environment it inherited (uvicorn imports this by name in each process)."""
    return create_app(Settings())


def serve(
    settings: Settings, port: int | None = None, host: str | None = None, workers: int = 1
) -> None:
    """Serve until interrupted. ``workers`` > 1: that many processes share the port (uvicorn's
    supervisor), each with its own pools; nothing the API keeps in memory is needed for
    correctness across them (every decision is made in PostgreSQL or NATS)."""
    host = host or settings.api.host
    port = port or settings.api.port
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
