"""Running the API under uvicorn (``antenna-jobs api [--port 8000]``)."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from core.settings import Settings


def serve(settings: Settings, port: int | None = None, host: str | None = None) -> None:
    """Serve until interrupted. One process; run several behind a proxy to scale out."""
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        # The ADC's 100+ MB result posts take a while to read; keep idle keep-alives short.
        timeout_keep_alive=30,
    )
