"""The bridge's queues on Antenna's broker: Antenna's ``jobs`` queue as it is, and ours beside it.

Ours are named after the jobs queue, so two deployments (or two tests) never share one:

- ``{jobs}.retry.{ms}ms``: a message whose start failed waits here for ``ms`` milliseconds (the
  queue's ``x-message-ttl``), then RabbitMQ dead-letters it back to ``{jobs}`` through the default
  exchange. Waiting there holds no prefetch slot, so a failing message never holds back other
  Runs. One queue per delay, because a queue expires messages only at its head (mixed delays in
  one queue would let a long one hold back a short one); each goes away once unused
  (``x-expires``, longer than its TTL, so never while it holds a message).
- ``{jobs}.dead-letter``: messages the bridge gave up on, with the reason in their headers, kept
  for an operator to list and replay (``antenna-jobs dead-letters``).

Antenna's queue is never redeclared when it exists: RabbitMQ refuses a declaration with other
arguments (``x-max-priority``, a quorum type), and consuming needs no declaration. Only a queue
that does not exist yet is declared, exactly as Celery declares one it routes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqp.exceptions import NotFound  # type: ignore[import-untyped]
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

# Our headers on a message we republish (a retry copy or a dead letter).
ATTEMPTS_HEADER = "x-antenna-jobs-attempts"
REASON_HEADER = "x-antenna-jobs-reason"
JOB_ID_HEADER = "x-antenna-jobs-job-id"
DEAD_AT_HEADER = "x-antenna-jobs-dead-lettered-at"
OUR_HEADERS = (ATTEMPTS_HEADER, REASON_HEADER, JOB_ID_HEADER, DEAD_AT_HEADER)
# kombu decompresses a body on receipt; a copy of that body must not claim to be compressed.
_DROPPED_ON_COPY = ("compression",)
# How long an empty retry queue outlives its TTL before RabbitMQ removes it.
_RETRY_QUEUE_SLACK_MS = 60_000
PERSISTENT = 2


def celery_queue(name: str) -> Queue:
    """The queue as Celery declares one it routes to (``app.amqp.Queues.new_missing``): a
    durable direct exchange and a durable queue, both named ``name``, bound by ``name``."""
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def consumed_queue(name: str) -> Queue:
    """The jobs queue for a Consumer: never (re)declared by it (see ensure_jobs_queue)."""
    return Queue(name, no_declare=True)


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead-letter"


def retry_queue(queue: str, delay_ms: int) -> str:
    return f"{queue}.retry.{delay_ms}ms"


@dataclass(frozen=True)
class QueueFigures:
    """A queue as a passive declaration reports it: ready messages and consumers."""

    messages: int
    consumers: int


def figures(channel: Any, name: str) -> QueueFigures:
    """Passive declaration (amqp NotFound, closing the channel, if the queue does not exist)."""
    _name, messages, consumers = channel.queue_declare(queue=name, passive=True)
    return QueueFigures(int(messages), int(consumers))


def ensure_jobs_queue(conn: Connection, name: str) -> bool:
    """The jobs queue exists afterwards; True if it existed (and was left exactly as it is)."""
    probe = conn.channel()
    try:
        figures(probe, name)
        return True
    except NotFound:
        # The failed passive declaration closed the probe channel.
        channel = conn.channel()
        try:
            celery_queue(name)(channel).declare()
        finally:
            channel.close()
        return False
    finally:
        if probe.is_open:
            probe.close()


def declare_dead_letter_queue(channel: Any, queue: str) -> str:
    name = dead_letter_queue(queue)
    channel.queue_declare(queue=name, durable=True, auto_delete=False)
    return name


def declare_retry_queue(channel: Any, queue: str, delay_ms: int) -> str:
    """Declared before each use (idempotent, same arguments), which also resets its expiry."""
    name = retry_queue(queue, delay_ms)
    channel.queue_declare(
        queue=name,
        durable=True,
        auto_delete=False,
        arguments={
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-expires": delay_ms + _RETRY_QUEUE_SLACK_MS,
        },
    )
    return name


def copy_headers(headers: dict[str, Any] | None, **ours: Any) -> dict[str, Any]:
    """The message's headers without our previous ones, with ``ours`` (None values left out)."""
    kept = {
        k: v
        for k, v in (headers or {}).items()
        if k not in OUR_HEADERS and k not in _DROPPED_ON_COPY
    }
    kept.update({k: v for k, v in ours.items() if v is not None})
    return kept


def copy_properties(properties: dict[str, Any] | None) -> dict[str, Any]:
    """The AMQP properties Celery sets that a copy keeps (its reply_to, correlation id...)."""
    props = properties or {}
    return {k: props[k] for k in ("correlation_id", "reply_to", "priority") if props.get(k)}
