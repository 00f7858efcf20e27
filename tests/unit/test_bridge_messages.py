"""Parsing Celery task messages (bridge/celery_messages.py): pure, no broker.

Well-formed messages are built by Celery itself (``app.amqp.as_task_v2`` / ``as_task_v1``, what
``send_task`` publishes) and serialized by kombu, so the tests follow Celery's real format.
"""

from __future__ import annotations

import pytest
from celery import Celery
from kombu.serialization import dumps

from bridge.celery_messages import (
    CREATE_DETECTION_IMAGES_TASK,
    RUN_JOB_TASK,
    MalformedTaskMessage,
    RunJobRequest,
    TaskMessage,
    UnexpectedTask,
    decode_body,
    parse_run_job,
    parse_task,
    run_job_request,
)

APP = Celery(broker="memory://", set_as_current=False)


def celery_message(task: str = RUN_JOB_TASK, args=(), kwargs=None, *, protocol: int = 2):
    """(headers, body bytes, content_type, content_encoding) as send_task would publish them."""
    make = APP.amqp.as_task_v2 if protocol == 2 else APP.amqp.as_task_v1
    message = make("0f6d-task-id", task, args=args, kwargs=kwargs or {})
    content_type, encoding, body = dumps(message.body, serializer="json")
    return message.headers, body.encode(encoding), content_type, encoding  # bytes on the wire


def request_of(headers, body, content_type="application/json", encoding="utf-8"):
    return run_job_request(headers, body, content_type, encoding)


def test_run_job_from_a_celery_message():
    headers, body, content_type, encoding = celery_message(kwargs={"job_id": 42})
    assert request_of(headers, body, content_type, encoding) == RunJobRequest(42, "0f6d-task-id")

    task = parse_task(headers, decode_body(body, content_type, encoding))
    assert task == TaskMessage(RUN_JOB_TASK, "0f6d-task-id", (), {"job_id": 42})


def test_a_protocol_1_message_is_malformed():
    """Celery < 4's format, which Antenna does not send: dead-lettered, never run."""
    headers, body, content_type, encoding = celery_message(kwargs={"job_id": 42}, protocol=1)
    with pytest.raises(MalformedTaskMessage, match="not a protocol 2 message"):
        request_of(headers, body, content_type, encoding)


def test_job_id_may_be_positional_and_str_bodies_decode():
    headers, body, content_type, encoding = celery_message(args=(7,))
    assert request_of(headers, body.decode(), content_type, encoding).job_id == 7


def test_another_task_is_unexpected():
    headers, body, content_type, encoding = celery_message(
        CREATE_DETECTION_IMAGES_TASK, kwargs={"source_image_ids": [1]}
    )
    with pytest.raises(UnexpectedTask) as caught:
        request_of(headers, body, content_type, encoding)
    assert caught.value.task == CREATE_DETECTION_IMAGES_TASK
    assert caught.value.task_id == "0f6d-task-id"
    assert isinstance(caught.value, MalformedTaskMessage)


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ((), {}, "no job_id"),
        ((1, 2), {}, "no job_id"),
        ((), {"job_id": "12"}, "'12' is not a positive integer"),
        ((), {"job_id": 0}, "0 is not a positive integer"),
        ((), {"job_id": -5}, "-5 is not a positive integer"),
        ((), {"job_id": 1.5}, "1.5 is not a positive integer"),
        ((), {"job_id": True}, "True is not a positive integer"),
        ((), {"job_id": None}, "None is not a positive integer"),
        ((), {"job_id": [1]}, r"\[1\] is not a positive integer"),
        ((3,), {"job_id": 3}, "both in args and kwargs"),
        ((), {"job_id": 3, "delay": 1}, r"unexpected kwargs \['delay'\]"),
    ],
)
def test_bad_job_ids_say_what_is_wrong(args, kwargs, reason):
    headers, body, content_type, encoding = celery_message(args=args, kwargs=kwargs)
    with pytest.raises(MalformedTaskMessage, match=reason) as caught:
        request_of(headers, body, content_type, encoding)
    assert caught.value.task == RUN_JOB_TASK and caught.value.task_id == "0f6d-task-id"
    assert not isinstance(caught.value, UnexpectedTask)


GOOD_HEADERS = {"task": RUN_JOB_TASK, "id": "t-1"}


@pytest.mark.parametrize(
    ("headers", "body", "content_type", "reason"),
    [
        (GOOD_HEADERS, b"[[], {", "application/json", "undecodable body"),
        (GOOD_HEADERS, b"\xff\xfe", "application/json", "undecodable body"),
        (GOOD_HEADERS, b"", "application/json", "not \\[args, kwargs, embed\\]"),
        (GOOD_HEADERS, b"[[], {}]", "application/json", "not \\[args, kwargs, embed\\]"),
        (GOOD_HEADERS, b'{"job_id": 1}', "application/json", "not \\[args, kwargs, embed\\]"),
        (GOOD_HEADERS, b"[{}, {}, {}]", "application/json", "args is not a list"),
        (GOOD_HEADERS, b"[[], [1], {}]", "application/json", "kwargs is not an object"),
        (GOOD_HEADERS, b"\x80\x04K\x01.", "application/x-python-serialize", "content type"),
        (GOOD_HEADERS, b"[[], {}, {}]", None, "content type None"),
        ({}, b'[[], {"job_id": 1}, {}]', "application/json", "no task name"),
        ({"task": "", "id": "t"}, b"[[], {}, {}]", "application/json", "task name"),
        ({"task": 5, "id": "t"}, b"[[], {}, {}]", "application/json", "task name"),
        ({"task": RUN_JOB_TASK}, b"[[], {}, {}]", "application/json", "task id is missing"),
        (None, b'{"id": "t", "kwargs": {"job_id": 1}}', "application/json", "no task name"),
    ],
)
def test_malformed_messages_say_what_is_wrong(headers, body, content_type, reason):
    with pytest.raises(MalformedTaskMessage, match=reason) as caught:
        run_job_request(headers, body, content_type, "utf-8")
    assert caught.value.reason in str(caught.value)


def test_a_message_of_another_task():
    message = parse_task({"task": "x.y", "id": "t-9"}, [[1], {}, {}])
    assert message == TaskMessage("x.y", "t-9", (1,), {})
    with pytest.raises(UnexpectedTask, match=r"'x\.y', not 'ami\.jobs\.tasks\.run_job'"):
        parse_run_job(message)
