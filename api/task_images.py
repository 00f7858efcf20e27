"""The image behind a task's reply subject, so a result is stored (and its task acked) only when
it is the result of that task's image.

A JetStream ack subject carries the stream sequence of its message; the message (a direct get,
no consumer involved) holds the image id. A sequence keeps its meaning as long as the run's
stream lives (a new run makes a new stream, and a new consumer), so lookups are cached by
(stream, consumer, sequence). The tasks this process hands out are cached as they go
(``remember``): a worker usually posts a batch's results to the process that served it, and a
direct get per result was a NATS round trip per image (~10% of the API's time on a big job).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from core.errors import TaskQueueUnavailable
from core.naming import AckSubject, parse_ack_subject

MAX_CACHED = 100_000
# Lookups in flight at once for one request (a post carries 24 results as the ADC sends them).
CONCURRENCY = 32


class TaskImages:
    def __init__(self, js: JetStreamContext, max_cached: int = MAX_CACHED) -> None:
        self._js = js
        self._cache: OrderedDict[AckSubject, int | None] = OrderedDict()
        self._max = max_cached

    def remember(self, subject: str, image_id: str) -> None:
        """The image of a task being handed out (its message's ``image_id``)."""
        found = parse_ack_subject(subject)
        if found is None:
            return
        try:
            image: int | None = int(image_id)
        except ValueError:
            image = None  # as a direct get of that message would find it
        self._put(found, image)

    def _put(self, key: AckSubject, image: int | None) -> None:
        self._cache[key] = image
        self._cache.move_to_end(key)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def images(self, job_id: int, subjects: list[str]) -> list[int | None]:
        """The image of each subject's task (None: no such task in the job's stream)."""
        keys = [parse_ack_subject(s) for s in subjects]
        found: dict[AckSubject, int | None] = {}
        for key in keys:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
        missing = {key for key in keys if key is not None and key not in found}
        if missing:
            limit = asyncio.Semaphore(CONCURRENCY)

            async def one(key: AckSubject) -> None:
                async with limit:
                    found[key] = await self._lookup(job_id, key)
                self._put(key, found[key])

            await asyncio.gather(*(one(key) for key in missing))
        return [None if key is None else found[key] for key in keys]

    async def _lookup(self, job_id: int, key: AckSubject) -> int | None:
        try:
            msg = await self._js.get_msg(key.stream, key.stream_seq, direct=True)
            return int(json.loads(msg.data or b"{}")["image_id"])
        except nats.js.errors.NotFoundError:
            return None
        except (KeyError, ValueError, TypeError):
            return None
        except (nats.errors.Error, OSError) as err:
            raise TaskQueueUnavailable(job_id) from err
