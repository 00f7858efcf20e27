"""The image behind a task's reply subject, so a result is stored (and its task acked) only when
it is the result of that task's image.

A JetStream ack subject carries the stream sequence of its message; the message (a direct get,
no consumer involved) holds the image id. A sequence keeps its meaning as long as the run's
stream lives (a new run makes a new stream, and a new consumer), so lookups are cached by
(stream, consumer, sequence).
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

    async def images(self, job_id: int, subjects: list[str]) -> list[int | None]:
        """The image of each subject's task (None: no such task in the job's stream)."""
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(subject: str) -> int | None:
            async with limit:
                return await self._image(job_id, subject)

        return list(await asyncio.gather(*(one(s) for s in subjects)))

    async def _image(self, job_id: int, subject: str) -> int | None:
        found = parse_ack_subject(subject)
        if found is None:
            return None
        if found in self._cache:
            self._cache.move_to_end(found)
            return self._cache[found]
        try:
            msg = await self._js.get_msg(found.stream, found.stream_seq, direct=True)
            image: int | None = int(json.loads(msg.data or b"{}")["image_id"])
        except nats.js.errors.NotFoundError:
            image = None
        except (KeyError, ValueError, TypeError):
            image = None
        except (nats.errors.Error, OSError) as err:
            raise TaskQueueUnavailable(job_id) from err
        self._cache[found] = image
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return image
