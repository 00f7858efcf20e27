"""Antenna's crop worker, asked for the crops of captures with new detections: its own
``create_detection_images`` task is queued (bridge/antenna_tasks.py) after each batch commits,
beside the saving, so a broker outage never slows it down. Off when no broker is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Send = Callable[[list[int]], Coroutine[Any, Any, Any]]


class CropRequests:
    def __init__(self, send: Send | None = None) -> None:
        self._send = send
        self._sends: set[asyncio.Task[Any]] = set()

    def new_detections(self, image_ids: list[int]) -> None:
        """After a commit that saved detections without crops on these captures."""
        if image_ids and self._send is not None:
            task: asyncio.Task[Any] = asyncio.create_task(self._send(sorted(set(image_ids))))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def close(self) -> None:
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
