"""Parsing Celery task messages (what Antenna's ``app.send_task`` puts on RabbitMQ).

Celery's protocol 2 (Celery >= 4, the one Antenna sends): the task name and id are headers
(``task``, ``id``) and the body is ``[args, kwargs, embed]``; anything else (protocol 1's dict
body included) is malformed. Antenna sends JSON, gzip-compressed (``CELERY_TASK_COMPRESSION``),
with ``content_encoding`` utf-8; kombu decompresses the body on receipt (by its ``compression``
header), so what is parsed here is plain. No I/O here.

AntennaJobsError
└── MalformedTaskMessage(reason, task, task_id)   can never succeed: the bridge drops it
    └── UnexpectedTask(task, task_id)             well formed, but not a task the bridge runs
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kombu.serialization import loads

from core.errors import AntennaJobsError

RUN_JOB_TASK = "ami.jobs.tasks.run_job"
CREATE_DETECTION_IMAGES_TASK = "ami.ml.tasks.create_detection_images"
JSON_CONTENT_TYPE = "application/json"


class MalformedTaskMessage(AntennaJobsError):
    """A message that can never be run; ``reason`` says what is wrong with it."""

    def __init__(self, reason: str, *, task: str | None = None, task_id: str | None = None):
        where = f" (task {task!r}, id {task_id})" if task or task_id else ""
        super().__init__(f"malformed task message{where}: {reason}")
        self.reason = reason
        self.task = task
        self.task_id = task_id


class UnexpectedTask(MalformedTaskMessage):
    def __init__(self, task: str, task_id: str | None, expected: str) -> None:
        super().__init__(f"task is {task!r}, not {expected!r}", task=task, task_id=task_id)
        self.expected = expected


@dataclass(frozen=True)
class TaskMessage:
    task: str
    id: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunJobRequest:
    """One ``run_job(job_id)`` message; ``task_id`` is the Celery task id Antenna stored."""

    job_id: int
    task_id: str


def decode_body(body: bytes | str, content_type: str | None, content_encoding: str | None) -> Any:
    """The body as Python values; JSON only (Antenna's only serializer; never unpickle)."""
    if content_type != JSON_CONTENT_TYPE:
        raise MalformedTaskMessage(f"content type {content_type!r} is not {JSON_CONTENT_TYPE}")
    try:
        return loads(body, content_type, content_encoding, accept=[JSON_CONTENT_TYPE])
    except Exception as err:
        raise MalformedTaskMessage(f"undecodable body ({type(err).__name__}: {err})") from err


def parse_task(headers: Mapping[str, Any] | None, payload: Any) -> TaskMessage:
    """A decoded protocol 2 message as a TaskMessage."""
    headers = headers or {}
    if "task" not in headers:
        raise MalformedTaskMessage("no task name (no 'task' header: not a protocol 2 message)")
    task, task_id = _text(headers.get("task")), _text(headers.get("id"))
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        raise MalformedTaskMessage(
            "protocol 2 body is not [args, kwargs, embed]", task=task, task_id=task_id
        )
    args, kwargs, _embed = payload
    if task is None:
        raise MalformedTaskMessage("task name is not a non-empty string", task_id=task_id)
    if task_id is None:
        raise MalformedTaskMessage("task id is missing", task=task)
    if not isinstance(args, list | tuple):
        raise MalformedTaskMessage("args is not a list", task=task, task_id=task_id)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise MalformedTaskMessage("kwargs is not an object", task=task, task_id=task_id)
    return TaskMessage(task, task_id, tuple(args), dict(kwargs))


def parse_run_job(message: TaskMessage) -> RunJobRequest:
    """``run_job(job_id)``, called as Antenna does (``kwargs={"job_id": N}``) or positionally."""
    if message.task != RUN_JOB_TASK:
        raise UnexpectedTask(message.task, message.id, RUN_JOB_TASK)
    if "job_id" in message.kwargs:
        if message.args:
            raise _bad(message, "job_id given both in args and kwargs")
        job_id = message.kwargs["job_id"]
    elif len(message.args) == 1:
        job_id = message.args[0]
    else:
        raise _bad(message, "no job_id (kwargs has none and args is not [job_id])")
    if extra := sorted(set(message.kwargs) - {"job_id"}):
        raise _bad(message, f"unexpected kwargs {extra}")
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
        raise _bad(message, f"job_id {job_id!r} is not a positive integer")
    return RunJobRequest(job_id=job_id, task_id=message.id)


def run_job_request(
    headers: Mapping[str, Any] | None,
    body: bytes | str,
    content_type: str | None,
    content_encoding: str | None,
) -> RunJobRequest:
    """Decode, parse and check one raw message; MalformedTaskMessage for anything wrong."""
    payload = decode_body(body, content_type, content_encoding)
    return parse_run_job(parse_task(headers, payload))


def _bad(message: TaskMessage, reason: str) -> MalformedTaskMessage:
    return MalformedTaskMessage(reason, task=message.task, task_id=message.id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
