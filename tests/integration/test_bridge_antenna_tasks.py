"""AntennaTaskSender: create_detection_images as Antenna's crop worker expects it, read back raw
from a queue of the test's own."""

from __future__ import annotations

import asyncio
import logging
import time

from kombu.connection import Connection

from bridge.antenna_tasks import AntennaTaskSender
from bridge.celery_messages import CREATE_DETECTION_IMAGES_TASK, decode_body, parse_task
from bridge.consumer import celery_queue
from core.settings import AntennaSettings
from tests.helpers.broker import BROKER_URL


def get_raw(queue: str, within: float = 10.0):
    """The next message of the queue, unparsed (acked: it is the test's own queue)."""
    deadline = time.monotonic() + within
    with Connection(BROKER_URL) as conn:
        bound = celery_queue(queue)(conn.channel())
        while time.monotonic() < deadline:
            message = bound.get(no_ack=True)
            if message is not None:
                return message
            time.sleep(0.05)
    raise AssertionError(f"no message in {queue} within {within} s")


async def test_create_detection_images_is_antennas_own_task_message(queue):
    sender = AntennaTaskSender(AntennaSettings(broker_url=BROKER_URL, results_queue=queue))
    try:
        task_id = await sender.create_detection_images([30, 10, 20])
    finally:
        await sender.aclose()
    assert task_id is not None
    message = await asyncio.to_thread(get_raw, queue)
    assert message.headers["task"] == CREATE_DETECTION_IMAGES_TASK
    assert message.headers["id"] == task_id
    assert message.content_type == "application/json"
    assert message.delivery_info["routing_key"] == queue
    body = decode_body(message.body, message.content_type, message.content_encoding)
    assert body[1] == {"source_image_ids": [30, 10, 20]}
    task = parse_task(message.headers, body)
    assert (task.args, task.kwargs) == ((), {"source_image_ids": [30, 10, 20]})


async def test_without_a_broker_it_does_nothing(queue):
    sender = AntennaTaskSender(AntennaSettings(broker_url=None, results_queue=queue))
    assert not sender.enabled
    assert await sender.create_detection_images([1, 2]) is None
    await sender.aclose()

    sender = AntennaTaskSender(AntennaSettings(broker_url=BROKER_URL, results_queue=queue))
    try:
        assert await sender.create_detection_images([]) is None  # nothing to crop: no message
    finally:
        await sender.aclose()


async def test_a_broker_outage_is_a_warning_not_an_error(caplog):
    unreachable = "amqp://guest:guest@127.0.0.1:1//"
    sender = AntennaTaskSender(AntennaSettings(broker_url=unreachable, results_queue="unused"))
    began = time.monotonic()
    try:
        assert await sender.create_detection_images([1]) is None
    finally:
        await sender.aclose()
    assert time.monotonic() - began < 15
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and CREATE_DETECTION_IMAGES_TASK in warnings[0].getMessage()
    assert "guest:**@" in warnings[0].getMessage()  # the password is not logged
