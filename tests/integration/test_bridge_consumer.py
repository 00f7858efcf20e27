"""The run_job consumer against the real RabbitMQ, with a recording start callback.

Messages are sent as Antenna sends them (Celery's ``send_task``). A message counts as acked when
the queue is empty after the consumer stopped: stopping closes the channel, which gives every
unacked message back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from datetime import timedelta

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from bridge.celery_messages import RUN_JOB_TASK
from bridge.consumer import celery_queue
from bridge.dead_letters import list_dead_letters, replay_dead_letters
from core.bridge_outcome import BridgeOutcome
from tests.helpers import eventually
from tests.helpers.broker import (
    BROKER_PORT,
    BROKER_URL,
    MANAGEMENT_URL,
    Hooks,
    Recorder,
    antenna_app,
    broker_url,
    dead_letter_depth,
    delete_queue,
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


async def test_malformed_and_foreign_messages_are_dead_lettered_and_do_not_block(queue, caplog):
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
    assert all(e.startswith("dead-lettering") for e in errors)
    assert await asyncio.to_thread(dead_letter_depth, queue) == 4


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


async def test_a_queue_declared_with_other_arguments_is_consumed_as_it_is(queue, caplog):
    """Antenna's jobs queue may carry arguments Celery's default declaration lacks (here
    x-max-priority, from its task_queues setting): the bridge consumes it without redeclaring."""
    caplog.set_level(logging.INFO, logger="antenna_jobs.bridge")
    declared = Queue(
        queue,
        Exchange(queue, type="direct", durable=True),
        routing_key=queue,
        durable=True,
        queue_arguments={"x-max-priority": 10},
    )
    app = antenna_app(task_queues=[declared])

    def send(job_id: int) -> str:
        return str(app.send_task(RUN_JOB_TASK, kwargs={"job_id": job_id}, queue=queue).id)

    try:
        first = await asyncio.to_thread(send, 1)  # Antenna declares the queue, with its argument
        start = Recorder()
        async with running_consumer(queue, start):
            second = await asyncio.to_thread(send, 2)
            await eventually(lambda: len(start.calls) == 2)
    finally:
        await asyncio.to_thread(app.close)
    assert sorted(start.calls) == [(1, first), (2, second)]
    assert await depth(queue) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("the queue as it was declared" in r.getMessage() for r in caplog.records)


class Poison:
    """start_for_antenna for rows it cannot read: the jobs in ``bad`` raise a validation-like
    error (it will never pass by itself), the others start."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: list[int] = []

    async def __call__(self, job_id: int, task_id: str) -> BridgeOutcome:
        self.calls.append(job_id)
        if job_id in self.bad:
            raise ValueError(f"job {job_id}: 'mystery' is not a valid JobType")
        return BridgeOutcome.STARTED


async def test_poison_messages_are_dead_lettered_and_never_hold_back_a_valid_run(queue, caplog):
    poison = list(range(1, 11))
    start = Poison(set(poison))
    hooks = Hooks()
    # A long backoff: a failed message held in the prefetch window would keep the valid Run
    # waiting for it; in a retry queue it holds nothing.
    wait = timedelta(seconds=10)
    try:
        async with running_consumer(
            queue,
            start,
            hooks=hooks,
            prefetch=10,
            max_attempts=2,
            retry_backoff=wait,
            retry_backoff_max=wait,
        ):
            for job_id in poison:
                await send_run_job(queue, job_id)
            valid = 99
            await send_run_job(queue, valid)
            await eventually(lambda: valid in start.calls)
            # Started before any poison message was tried a second time.
            assert sorted(start.calls) == [*poison, valid]
            await eventually(lambda: len(hooks.dead) == 10, within=60)
            assert await asyncio.to_thread(dead_letter_depth, queue) == 10
    finally:
        await asyncio.to_thread(delete_queue, queue, BROKER_URL, (10_000,))
    assert sorted(start.calls) == sorted([*poison, *poison, valid])
    assert sorted(d.job_id for d in hooks.dead) == poison
    assert all(d.attempts == 2 and "not a valid JobType" in d.reason for d in hooks.dead)
    gave_up = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(gave_up) == 10 and all("failed 2 times" in m for m in gave_up)


async def test_dead_letters_are_listed_with_their_reason_and_replayed(queue):
    start = Poison({5, 6})
    hooks = Hooks()
    async with running_consumer(queue, start, hooks=hooks, max_attempts=3):
        five = await send_run_job(queue, 5)
        await send_run_job(queue, 6)
        await asyncio.to_thread(send_task, queue, "ami.ml.tasks.save_results", results=[])
        await eventually(lambda: len(hooks.dead) == 3)
        await eventually(lambda: hooks.reports and hooks.reports[-1].dead_lettered == 3)

    letters = await asyncio.to_thread(list_dead_letters, BROKER_URL, queue)
    assert len(letters) == 3  # listing removes nothing
    assert await asyncio.to_thread(list_dead_letters, BROKER_URL, queue) == letters
    by_job = {letter.job_id: letter for letter in letters}
    assert by_job[5].task_id == five and by_job[5].attempts == 3
    assert "not a valid JobType" in (by_job[5].reason or "")
    assert by_job[None].task == "ami.ml.tasks.save_results"
    assert "not a run_job message" in (by_job[None].reason or "")

    start.bad.discard(5)  # the cause is fixed
    replayed = await asyncio.to_thread(replay_dead_letters, BROKER_URL, queue, job_id=5)
    assert [r.job_id for r in replayed] == [5]
    async with running_consumer(queue, start, hooks=hooks, max_attempts=3):
        await eventually(lambda: start.calls.count(5) == 4)
    assert await depth(queue) == 0
    assert await asyncio.to_thread(dead_letter_depth, queue) == 2

    # Failures that may pass (Temporal unreachable) are retried past max_attempts.
    flaky = Recorder(fails=4)
    async with running_consumer(queue, flaky, max_attempts=2):
        await send_run_job(queue, 7)
        await eventually(lambda: len(flaky.calls) == 5)
    assert await asyncio.to_thread(dead_letter_depth, queue) == 2


async def test_another_consumer_of_the_jobs_queue_is_warned_about_and_reported(queue, caplog):
    """A leftover Antenna Celery worker on ``jobs`` takes some of the Runs."""
    stop = threading.Event()
    listening = threading.Event()

    def foreign_consumer() -> None:
        # Named as a client may name its connection: the bridge reports that name.
        named = {"client_properties": {"connection_name": "leftover-celery-worker"}}
        with Connection(BROKER_URL, transport_options=named) as conn:
            channel = conn.channel()
            bound = celery_queue(queue)(channel)
            bound.declare()
            bound.consume(callback=lambda message: None)
            listening.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, socket.timeout):
                    conn.drain_events(timeout=0.1)

    thread = threading.Thread(target=foreign_consumer, daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(listening.wait, 15)
        hooks = Hooks()
        async with running_consumer(queue, Recorder(), hooks=hooks, management_url=MANAGEMENT_URL):

            def foreign(n: int) -> bool:
                return any(r.connected and r.foreign_consumers == n for r in hooks.reports)

            await eventually(lambda: foreign(1))
            warned = [r for r in caplog.records if r.getMessage().startswith("1 other consumer(s)")]
            assert len(warned) == 1 and warned[0].levelno == logging.WARNING
            assert "1 other consumer(s) on queue" in warned[0].getMessage()

            # The management API lists a consumer a few seconds after the broker counts it.
            def named() -> list[str]:
                return [
                    r.getMessage()
                    for r in caplog.records
                    if r.getMessage().startswith("other consumer(s) on")
                ]

            [line] = await eventually(named, within=30)
            assert "'leftover-celery-worker'" in line and "user guest" in line
            stop.set()
            await asyncio.to_thread(thread.join, 15)
            hooks.reports.clear()
            await eventually(lambda: foreign(0))
            assert hooks.reports[-1].consumers == 1
    finally:
        stop.set()
    # Warned once (and named once), not at every look.
    assert len([r for r in caplog.records if "other consumer(s)" in r.getMessage()]) == 2
