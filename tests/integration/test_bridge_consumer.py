"""The run_job consumer against the real RabbitMQ, with a recording start callback.

Messages are sent as Antenna sends them (Celery's ``send_task``). A message counts as acked when
the queue is empty after the consumer stopped: stopping closes the channel, which gives every
unacked message back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from bridge.celery_messages import RUN_JOB_TASK
from bridge.outcome import BridgeOutcome
from tests.helpers import eventually
from tests.helpers.broker import (
    BROKER_PORT,
    BROKER_URL,
    Recorder,
    broker_url,
    publish_raw,
    queue_depth,
    running_consumer,
    send_run_job,
    send_task,
)
from tests.helpers.processes import TcpProxy


async def depth(name: str) -> int:
    return await asyncio.to_thread(queue_depth, name)


async def test_a_message_reaches_the_callback_and_is_acked(queue):
    # Celery declares the queue first here; the consumer's declaration must match it.
    task_id = await send_run_job(queue, 41)
    start = Recorder()
    async with running_consumer(queue, start):
        await eventually(lambda: start.calls)
        gzipped = await send_run_job(queue, 42, compression="gzip")  # Antenna's setting
        await eventually(lambda: len(start.calls) == 2)
    assert start.calls == [(41, task_id), (42, gzipped)]
    assert await depth(queue) == 0


async def test_a_failing_start_is_requeued_until_it_succeeds(queue, caplog):
    start = Recorder(fails=2)
    async with running_consumer(queue, start):
        # The consumer declared the queue first; Celery's declaration must match it.
        task_id = await send_run_job(queue, 7)
        await eventually(lambda: len(start.calls) == 3)
        await asyncio.sleep(0.3)  # a fourth delivery would come within the max backoff
    assert start.calls == [(7, task_id)] * 3
    assert await depth(queue) == 0
    retried = [r for r in caplog.records if "requeued in" in r.getMessage()]
    assert len(retried) == 2 and all(r.levelno == logging.WARNING for r in retried)
    assert "Temporal unreachable" in retried[0].getMessage()


async def test_malformed_and_foreign_messages_are_dropped_and_do_not_block(queue, caplog):
    start = Recorder()
    async with running_consumer(queue, start):
        await asyncio.to_thread(send_task, queue, "ami.ml.tasks.save_results", results=[])
        await send_run_job(queue, "12")
        await asyncio.to_thread(publish_raw, queue, b"[[], {", headers={"task": RUN_JOB_TASK})
        await asyncio.to_thread(
            publish_raw, queue, b"\x80\x04.", content_type="application/x-python-serialize"
        )
        task_id = await send_run_job(queue, 99)
        await eventually(lambda: start.calls)
        await asyncio.sleep(0.2)
    assert start.calls == [(99, task_id)]
    assert await depth(queue) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4, errors
    assert "not a run_job message" in errors[0] and "ami.ml.tasks.save_results" in errors[0]
    assert "job_id '12' is not a positive integer" in errors[1]
    assert "undecodable body" in errors[2]
    assert "content type 'application/x-python-serialize'" in errors[3]


async def test_outcomes_other_than_started_are_acked_too(queue):
    start = Recorder(outcome=BridgeOutcome.FINAL)
    async with running_consumer(queue, start):
        await send_run_job(queue, 5)
        await eventually(lambda: start.calls)
    assert await depth(queue) == 0


async def test_cancelling_run_stops_promptly_and_gives_unfinished_work_back(queue):
    called = asyncio.Event()

    async def slow_start(job_id: int, task_id: str) -> BridgeOutcome:
        called.set()
        await asyncio.Event().wait()  # e.g. Temporal does not answer
        return BridgeOutcome.STARTED

    async with running_consumer(queue, slow_start) as running:
        await send_run_job(queue, 8)
        await asyncio.wait_for(called.wait(), 10)
        began = time.monotonic()
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        assert time.monotonic() - began < 3
    # The start never returned: the message is back in the queue, for the next bridge.
    assert await depth(queue) == 1


async def test_a_broker_outage_is_retried_until_the_broker_is_back(queue, caplog):
    proxy = TcpProxy("127.0.0.1", BROKER_PORT)
    await proxy.start()
    start = Recorder()
    async with running_consumer(queue, start, broker_url(proxy.port)) as running:
        await proxy.cut()
        running.ready.clear()
        first = await send_run_job(queue, 1)  # sent while the bridge cannot reach the broker
        await eventually(lambda: sum("reconnecting" in r.getMessage() for r in caplog.records) >= 2)
        assert not running.task.done() and start.calls == []
        await proxy.restore()
        await asyncio.wait_for(running.ready.wait(), 15)
        await eventually(lambda: start.calls)
    await proxy.cut()
    assert start.calls == [(1, first)]
    assert await depth(queue) == 0


async def test_a_clashing_queue_declaration_is_reported_and_retried(queue, caplog):
    """RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED)."""

    def declare_transient() -> None:
        with Connection(BROKER_URL) as conn:
            Queue(queue, Exchange(queue, type="direct"), routing_key=queue, durable=False)(
                conn.channel()
            ).declare()

    await asyncio.to_thread(declare_transient)
    async with running_consumer(queue, Recorder(), wait_ready=False) as running:
        await eventually(lambda: sum("inequivalent" in r.getMessage() for r in caplog.records) >= 2)
        assert not running.task.done() and not running.ready.is_set()
