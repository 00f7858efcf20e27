"""A Celery app of our own on Antenna's broker, for the messages we send Antenna's workers: JSON
(protocol 2, Celery's own), and on a broker outage a short connect and two quick publish
retries, so a send fails fast (its caller retries or logs it)."""

from __future__ import annotations

import asyncio
from typing import Any

from celery import Celery

_CONNECT_TIMEOUT = 4.0
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class CeleryApp:
    """Holds the app when there is a broker (``broker_url``; None: disabled, no app); ``conf``:
    more of the app's settings."""

    def __init__(self, name: str, broker_url: str | None, **conf: Any) -> None:
        self._app: Celery | None = None
        if broker_url is not None:
            self._app = Celery(name, broker=broker_url, set_as_current=False)
            self._app.conf.update(
                task_serializer="json",
                accept_content=["json"],
                broker_connection_timeout=_CONNECT_TIMEOUT,
                task_publish_retry_policy=_PUBLISH_RETRY,
                **conf,
            )

    @property
    def enabled(self) -> bool:
        return self._app is not None

    def close(self) -> None:
        """Close the app's broker connections (blocking; call once, at shutdown)."""
        if self._app is not None:
            self._app.close()

    async def aclose(self) -> None:
        if self._app is not None:
            await asyncio.to_thread(self.close)
