"""JetStream publishes with a bounded number awaiting their PubAck, acked per page.

nats-py's ``publish_async`` costs, per message, a ``wait_for`` on a semaphore (a Task each), a
NUID plus ``token_hex``, and a Future with a done callback: most of the publish time at 20,000
messages (benchmarks/publish_bench.py). Here one subscription per publish run receives every
PubAck on ``<inbox>.<n>``; a message costs a counter, a dict entry and the publish itself, and a
page is one future, resolved when its last ack arrives. JetStream's own PubAck is the only proof
that a message is stored, so nothing is counted published before it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from core import json_codec
from core.errors import PublishNotAcknowledged


class PageAcks:
    """The PubAcks of one page of publishes: ``done`` resolves when every one of them arrived,
    or fails with the first refusal."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent = 0
        self._waiting = 0
        self._sealed = False

    def seal(self) -> None:
        """Every publish of the page has been sent."""
        self._sealed = True
        self._finish_if_complete()

    def _sent(self) -> None:
        self.sent += 1
        self._waiting += 1

    def _acked(self, refusal: str | None) -> None:
        if self.done.done():
            return
        if refusal is not None:
            self.done.set_exception(PublishNotAcknowledged(refusal))
            return
        self._waiting -= 1
        self._finish_if_complete()

    def _finish_if_complete(self) -> None:
        if self._sealed and self._waiting == 0 and not self.done.done():
            self.done.set_result(None)


def _refusal(msg: Msg) -> str | None:
    """Why JetStream did not store the message, or None for a PubAck."""
    data = msg.data
    if data and b'"error"' not in data:
        return None  # {"stream": ..., "seq": ...}
    status = (msg.headers or {}).get("Status")
    if status is not None and not msg.data:
        # No responders (503): no stream listens on the subject.
        return f"status {status} {(msg.headers or {}).get('Description', '')}".strip()
    if b'"error"' not in msg.data:
        return None
    try:
        error = json_codec.loads(msg.data).get("error") or {}
    except ValueError:
        return msg.data[:200].decode(errors="replace")
    return str(error.get("description") or error)


class JetStreamPublisher:
    """At most ``window`` publishes awaiting their PubAck; waiting longer than ``ack_timeout``
    for room (or for a page) is an outage (PublishNotAcknowledged: the activity is retried
    from its checkpoint and Nats-Msg-Id drops what was stored already)."""

    def __init__(self, nc: NatsClient, window: int, ack_timeout: float) -> None:
        self._nc = nc
        self._window = window
        self._ack_timeout = ack_timeout
        self._prefix = ""
        self._sequence = 0
        self._pending: dict[int, PageAcks] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> JetStreamPublisher:
        self._prefix = f"{self._nc.new_inbox()}."
        self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        self._pending.clear()

    async def publish(self, subject: str, payload: bytes, msg_id: str, page: PageAcks) -> None:
        while len(self._pending) >= self._window:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self._ack_timeout)
            except TimeoutError:
                raise PublishNotAcknowledged(
                    f"no PubAck for {len(self._pending)} messages within {self._ack_timeout:.0f} s"
                ) from None
        self._sequence += 1
        sequence = self._sequence
        self._pending[sequence] = page
        page._sent()
        await self._nc.publish(
            subject, payload, reply=f"{self._prefix}{sequence}", headers={"Nats-Msg-Id": msg_id}
        )

    async def acked(self, page: PageAcks) -> None:
        """Wait for the page's acks (``seal`` it first)."""
        try:
            await asyncio.wait_for(asyncio.shield(page.done), self._ack_timeout)
        except TimeoutError:
            raise PublishNotAcknowledged(
                f"no PubAck for some of a page's {page.sent} messages within"
                f" {self._ack_timeout:.0f} s"
            ) from None

    async def _on_ack(self, msg: Msg) -> None:
        try:
            sequence = int(msg.subject[len(self._prefix) :])
        except ValueError:
            return
        page = self._pending.pop(sequence, None)
        if page is None:
            return  # a second answer, or one after its run ended
        if len(self._pending) < self._window:
            self._room.set()
        page._acked(_refusal(msg))
