"""The image behind a task's reply subject, so a result is stored (and its task acked) only when
it is the result of that task's image.

A JetStream ack subject carries the stream sequence of its message and the message's stored
timestamp; the message (a direct get, no consumer involved) holds the image id. A new run of the
job makes its stream anew, numbered from 1 again, with a consumer of the same name
(core/naming.py): a subject of an earlier run is told apart by its timestamp, which is not the
one of the message the stream now holds at that sequence (then: no such task). Lookups are
cached by the whole (stream, consumer, sequence, timestamp). The tasks this process hands out
are cached as they go
(``remember``): a worker usually posts a batch's results to the process that served it, and a
direct get per result was a NATS round trip per image (~10% of the API's time on a big job).
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections import OrderedDict

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from core import json_codec
from core.errors import TaskQueueUnavailable
from core.naming import AckSubject, parse_ack_subject

MAX_CACHED = 100_000
# Lookups in flight at once for one request (a post carries 24 results as the ADC sends them).
CONCURRENCY = 32


class TaskImages:
    """Keys are per run too: a subject this process handed out in an earlier run must be looked
    up again (and found to be that run's) rather than served from the cache."""

    def __init__(self, js: JetStreamContext, max_cached: int = MAX_CACHED) -> None:
        self._js = js
        self._cache: OrderedDict[tuple[str, AckSubject], int | None] = OrderedDict()
        self._max = max_cached

    def remember(self, run_id: str, subject: str, image_id: str) -> None:
        """The image of a task of run ``run_id`` being handed out (its message's ``image_id``)."""
        found = parse_ack_subject(subject)
        if found is None:
            return
        try:
            image: int | None = int(image_id)
        except ValueError:
            image = None  # as a direct get of that message would find it
        self._put((run_id, found), image)

    def _put(self, key: tuple[str, AckSubject], image: int | None) -> None:
        self._cache[key] = image
        self._cache.move_to_end(key)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def images(self, job_id: int, run_id: str, subjects: list[str]) -> list[int | None]:
        """The image of each subject's task (None: no such task in the job's stream), for run
        ``run_id`` (whose stream the job's stream is, as the caller made sure)."""
        keys = [(run_id, ack) if (ack := parse_ack_subject(s)) else None for s in subjects]
        found: dict[tuple[str, AckSubject], int | None] = {}
        for key in keys:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
        missing = {key for key in keys if key is not None and key not in found}
        if missing:
            limit = asyncio.Semaphore(CONCURRENCY)

            async def one(key: tuple[str, AckSubject]) -> None:
                async with limit:
                    found[key] = await self._lookup(job_id, key[1])
                self._put(key, found[key])

            await asyncio.gather(*(one(key) for key in missing))
        return [None if key is None else found[key] for key in keys]

    async def _lookup(self, job_id: int, key: AckSubject) -> int | None:
        try:
            msg = await self._js.get_msg(key.stream, key.stream_seq, direct=True)
            if stored_timestamp(msg.headers) != key.timestamp:
                return None  # another message of that sequence: the subject is an earlier run's
            return int(json_codec.loads(msg.data or b"{}")["image_id"])
        except nats.js.errors.NotFoundError:
            return None
        except (KeyError, ValueError, TypeError):
            return None
        except (nats.errors.Error, OSError) as err:
            raise TaskQueueUnavailable(job_id) from err


def stored_timestamp(headers: dict[str, str] | None) -> int | None:
    """A direct get's ``Nats-Time-Stamp`` (RFC 3339, up to 9 fractional digits, UTC) in ns since
    the epoch, as ack subjects carry it; None if absent or unreadable."""
    raw = (headers or {}).get("Nats-Time-Stamp")
    if not raw or not raw.endswith("Z"):
        return None
    whole, _, fraction = raw[:-1].partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        nanos = int(fraction.ljust(9, "0")[:9]) if fraction else 0
    except ValueError:
        return None
    return seconds * 1_000_000_000 + nanos
