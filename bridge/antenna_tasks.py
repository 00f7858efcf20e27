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

from kombu.utils.url import maybe_sanitize_url

from bridge.celery_app import CeleryApp
from bridge.celery_messages import CREATE_DETECTION_IMAGES_TASK
from core.settings import AntennaSettings

log = logging.getLogger("antenna_jobs.bridge")


class AntennaTaskSender(CeleryApp):
    """Sends tasks through a Celery app of its own (``send_task``, as Antenna's code does), so
    the messages are Celery's own: protocol 2, JSON, Celery's queue declaration."""

    def __init__(self, settings: AntennaSettings) -> None:
        super().__init__("antenna-jobs", settings.broker_url)
        self._queue = settings.results_queue
        if settings.broker_url is not None:
            self._where = f"{self._queue!r} on {maybe_sanitize_url(settings.broker_url)}"

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
