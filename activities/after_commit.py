"""What Antenna must hear after antenna-jobs commits writes to its tables: its query cache
(django-cachalot) invalidated for the tables written, and its crop task queued for captures
with new detections. Both are best effort and off when standalone (no settings for them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

Invalidate = Callable[[Iterable[str]], Awaitable[None]]
QueueCrops = Callable[[list[int]], Coroutine[Any, Any, Any]]


class AfterCommit:
    def __init__(
        self, invalidate: Invalidate | None = None, queue_crops: QueueCrops | None = None
    ) -> None:
        self._invalidate = invalidate
        self._queue_crops = queue_crops
        # Crop sends run beside the saving (a broker outage must not slow it down).
        self._sends: set[asyncio.Task[Any]] = set()

    async def wrote(self, tables: Iterable[str]) -> None:
        """After a commit that wrote these Antenna tables."""
        names = sorted(set(tables))
        if names and self._invalidate is not None:
            await self._invalidate(names)

    async def new_detections(self, image_ids: list[int]) -> None:
        """After a commit that saved detections without crops on these captures."""
        if image_ids and self._queue_crops is not None:
            task: asyncio.Task[Any] = asyncio.create_task(self._queue_crops(sorted(set(image_ids))))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def close(self) -> None:
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
