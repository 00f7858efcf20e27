"""The operator's side of the dead-letter queue (``{jobs}.dead-letter``): list and replay.

Listing takes the messages without acking them and closes the channel, which gives every one
back in its place: nothing is lost or reordered by looking. Replaying sends a copy (the original
body and Celery headers, without ours, so its attempts start again) to the jobs queue, then acks
the dead letter; the copy is confirmed by the broker before the ack. Blocking (kombu): the CLI
calls these in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.connection import Connection
from kombu.messaging import Producer
from pydantic import BaseModel

from bridge import queues

# At most this many messages are taken (unacked) by one listing.
LIST_LIMIT = 1000


class DeadLetterView(BaseModel):
    job_id: int | None
    task: str | None
    task_id: str | None
    reason: str | None
    attempts: int | None
    dead_lettered_at: str | None


def _view(message: Any) -> DeadLetterView:
    headers: dict[str, Any] = dict(message.headers or {})

    def text(key: str) -> str | None:
        value = headers.get(key)
        return str(value) if value is not None else None

    def number(key: str) -> int | None:
        value = headers.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return DeadLetterView(
        job_id=number(queues.JOB_ID_HEADER),
        task=text("task"),
        task_id=text("id"),
        reason=text(queues.REASON_HEADER),
        attempts=number(queues.ATTEMPTS_HEADER),
        dead_lettered_at=text(queues.DEAD_AT_HEADER),
    )


@contextmanager
def _channel(url: str, timeout: float) -> Iterator[Any]:
    with Connection(
        url, connect_timeout=timeout, transport_options={"confirm_publish": True}
    ) as conn:
        conn.connect()
        channel = conn.channel()
        try:
            yield channel
        finally:
            channel.close()  # unacked messages go back to their queue


def list_dead_letters(
    url: str, queue: str, *, limit: int = LIST_LIMIT, timeout: float = 5.0
) -> list[DeadLetterView]:
    """The dead letters of ``queue`` (the jobs queue's name), oldest first; none are removed."""
    found: list[DeadLetterView] = []
    with _channel(url, timeout) as channel:
        name = queues.declare_dead_letter_queue(channel, queue)
        while len(found) < limit:
            message = channel.basic_get(name, no_ack=False)
            if message is None:
                break
            found.append(_view(message))
    return found


def replay_dead_letters(
    url: str, queue: str, *, job_id: int | None = None, timeout: float = 5.0
) -> list[DeadLetterView]:
    """Send the dead letters (all, or those of ``job_id``) back to the jobs queue; what went."""
    replayed: list[DeadLetterView] = []
    with _channel(url, timeout) as channel:
        name = queues.declare_dead_letter_queue(channel, queue)
        producer = Producer(channel, auto_declare=False)
        while True:
            # A message taken and not acked is not handed out again on this channel.
            message = channel.basic_get(name, no_ack=False)
            if message is None:
                break
            view = _view(message)
            if job_id is not None and view.job_id != job_id:
                continue
            properties = dict(message.properties or {})
            producer.publish(
                message.body,
                routing_key=queue,
                serializer=None,
                content_type=properties.get("content_type"),
                content_encoding=properties.get("content_encoding"),
                headers=queues.copy_headers(properties.get("application_headers")),
                delivery_mode=queues.PERSISTENT,
                **queues.copy_properties(properties),
            )
            channel.basic_ack(message.delivery_tag)
            replayed.append(view)
    return replayed
