"""Finding the image behind a task message: from a reply (ack) subject, or from a JetStream
MAX_DELIVERIES advisory; both carry the stream sequence, and get_msg gives the task message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from core import json_codec
from core.naming import stream_seq_from_reply


class TaskLookup:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def image_for_seq(self, stream: str, seq: int) -> int | None:
        """The image id of the task message at ``seq``; None if the message or stream is gone."""
        try:
            msg = await self._js.get_msg(stream, seq)
            return int(json_codec.loads(msg.data or b"{}")["image_id"])
        except (NatsError, KeyError, ValueError, TypeError):
            return None

    async def image_for_reply(self, reply_subject: str) -> int | None:
        found = stream_seq_from_reply(reply_subject)
        return await self.image_for_seq(*found) if found else None


class MaxDeliveriesWatcher:
    """Collects MAX_DELIVERIES advisories of one consumer (``subject``: its advisory subject)
    while the aggregator runs.

    Advisories published while nobody listens are lost; the stall reconciliation covers those.
    """

    def __init__(
        self, nc: NatsClient, subject: str, on_advisory: Callable[[], None] | None = None
    ) -> None:
        self._nc = nc
        self._subject = subject
        # Wakes the aggregator, which sleeps until results or advisories arrive.
        self._wake = on_advisory
        self._seqs: list[tuple[int, int]] = []
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_advisory)

    async def _on_advisory(self, msg: Msg) -> None:
        with suppress(ValueError, KeyError, TypeError):
            body = json_codec.loads(msg.data)
            self._seqs.append((int(body["stream_seq"]), int(body.get("deliveries", 0))))
            if self._wake is not None:
                self._wake()

    def take(self) -> list[tuple[int, int]]:
        """(stream sequence, deliveries) of the advisories received since the last call."""
        taken, self._seqs = self._seqs, []
        return taken

    async def stop(self) -> None:
        if self._sub is not None:
            with suppress(NatsError, asyncio.CancelledError):
                await self._sub.unsubscribe()
            self._sub = None
