"""Publishing Antenna's own Celery tasks to its broker, for Antenna's workers to run.

Today one task: ``ami.ml.tasks.create_detection_images(source_image_ids=[...])`` on the results
queue (``ml_results``), which Antenna queues after saving detections so its crop worker cuts and
stores a crop for every detection with a bbox and no path (docs/antenna-db.md section 1,
step 5). Crops are best effort, as in Antenna: a broker outage is logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from bridge.celery_messages import CREATE_DETECTION_IMAGES_TASK
from core.settings import AntennaSettings

log = logging.getLogger("antenna_jobs.bridge")

# How long one send may take on a broker outage (connect, then Celery's publish retries).
_CONNECT_TIMEOUT = 4.0
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class AntennaTaskSender:
    """Sends tasks through a Celery app of its own (``send_task``, as Antenna's code does), so
    the messages are Celery's own: protocol 2, JSON, Celery's queue declaration."""

    def __init__(self, settings: AntennaSettings) -> None:
        self._queue = settings.results_queue
        self._app: Celery | None = None
        if settings.broker_url is not None:
            self._app = Celery("antenna-jobs", broker=settings.broker_url, set_as_current=False)
            self._app.conf.update(
                task_serializer="json",
                accept_content=["json"],
                broker_connection_timeout=_CONNECT_TIMEOUT,
                task_publish_retry_policy=_PUBLISH_RETRY,
            )
            self._where = f"{self._queue!r} on {maybe_sanitize_url(settings.broker_url)}"

    @property
    def enabled(self) -> bool:
        return self._app is not None

    async def create_detection_images(self, source_image_ids: Iterable[int]) -> str | None:
        """Queue the crops of these images' detections; the Celery task id, or None if nothing
        was sent (no broker configured, no images, or the broker is unreachable)."""
        ids = [int(i) for i in source_image_ids]
        if self._app is None or not ids:
            return None
        return await self._send(CREATE_DETECTION_IMAGES_TASK, {"source_image_ids": ids})

    async def _send(self, task: str, kwargs: dict[str, Any]) -> str | None:
        try:
            return await asyncio.to_thread(self._send_blocking, task, kwargs)
        except Exception as err:
            log.warning(
                "could not queue %s to %s (%s: %s); continuing without it",
                task,
                self._where,
                type(err).__name__,
                err,
            )
            return None

    def _send_blocking(self, task: str, kwargs: dict[str, Any]) -> str:
        assert self._app is not None
        result = self._app.send_task(task, kwargs=kwargs, queue=self._queue)
        return str(result.id)

    def close(self) -> None:
        """Close the app's broker connections (blocking; call once, at shutdown)."""
        if self._app is not None:
            self._app.close()

    async def aclose(self) -> None:
        if self._app is not None:
            await asyncio.to_thread(self.close)
