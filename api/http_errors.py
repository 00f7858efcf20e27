"""How errors become HTTP answers: every 4xx body names the field or the state at fault.

400 bodies: ``{"detail": "<field>: <message>", "field": "<field path>", "errors": [{"field",
"message"}]}``; 404 ``{"detail", "job_id"}``; 409 ``{"detail", "job_id", "status", "action"}``;
413 ``{"detail", "limit"}`` for a body over the configured size; 503 when Postgres, NATS or
Temporal does not answer (``unavailable``, in Antenna's shapes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from temporalio.service import RPCError

from core.errors import InvalidJobInput, InvalidJobState, JobNotFound, TaskQueueUnavailable
from core.wire_types import friendly_message

log = logging.getLogger(__name__)

TASK_QUEUE_UNAVAILABLE = "Task queue temporarily unavailable"
DATABASE_UNAVAILABLE = "Database temporarily unavailable"
RESULT_STORE_UNAVAILABLE = "Result store temporarily unavailable"
# Pydantic names union members in error locations ("str", "list[any]"); they are not fields.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


class BadRequest(Exception):
    """A request the caller must fix; ``errors`` are (field path, message) pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = list(errors)

    @classmethod
    def field(cls, field: str, message: str) -> BadRequest:
        return cls([(field, message)])


class BodyTooLarge(Exception):
    """A request body over ``limit`` bytes (``size`` when its Content-Length said so)."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit
        self.size = size


def field_path(loc: Iterable[str | int], prefix: str = "") -> str:
    """``("detections", 0, "bbox", "x1")`` -> ``prefix.detections[0].bbox.x1``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in _TYPE_TAGS:
            continue
        else:
            path = f"{path}.{part}" if path else part
    return path


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    return [(field_path(e["loc"], prefix) or prefix, friendly_message(e)) for e in exc.errors()]


def bad_request_body(errors: Sequence[tuple[str, str]]) -> dict[str, Any]:
    first_field, first_message = errors[0] if errors else ("", "invalid request")
    return {
        "detail": f"{first_field}: {first_message}" if first_field else first_message,
        "field": first_field,
        "errors": [{"field": f, "message": m} for f, m in errors],
    }


def bad_request(errors: Sequence[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(bad_request_body(errors), status_code=400)


def unavailable(
    detail: str = DATABASE_UNAVAILABLE, *, job_id: int | None = None, key: str = "detail"
) -> JSONResponse:
    """A 503: a service we need did not answer (the client tries again). Every 503 is made
    here, in the shapes Antenna answers with, which its clients know: ``{"detail"}`` as Django
    REST framework's errors are; its /tasks/ ``{"error"}`` (``key``); its /result/
    ``{"status": "error", "job_id", "detail"}`` (``job_id``)."""
    body: dict[str, Any] = {"status": "error", "job_id": job_id} if job_id is not None else {}
    return JSONResponse(body | {key: detail}, status_code=503)


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    return bad_request(exc.errors)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e["loc"] and e["loc"][0] == "path" for e in errors):
        return JSONResponse({"detail": "Not found."}, status_code=404)
    return bad_request([(field_path(e["loc"][1:]), str(e["msg"])) for e in errors])


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    size = f" ({exc.size} bytes)" if exc.size is not None else ""
    body = {
        "detail": (
            f"Request body too large{size}: the limit is {exc.limit} bytes"
            " (ANTENNA_JOBS_API_MAX_BODY_BYTES); post fewer results per request."
        ),
        "limit": exc.limit,
    }
    # The rest of the body is not read: the connection cannot be reused.
    return JSONResponse(body, status_code=413, headers={"Connection": "close"})


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobNotFound)
    return JSONResponse({"detail": str(exc), "job_id": exc.job_id}, status_code=404)


async def _invalid_state(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidJobState)
    return JSONResponse(
        {"detail": str(exc), "job_id": exc.job_id, "status": exc.status, "action": exc.action},
        status_code=409,
    )


async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidJobInput)
    return bad_request([(exc.field, exc.message)])


async def _task_queue(_: Request, exc: Exception) -> JSONResponse:
    return unavailable(TASK_QUEUE_UNAVAILABLE, key="error")


async def _database(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return unavailable()


async def _temporal(request: Request, exc: Exception) -> JSONResponse:
    log.warning("temporal error on %s %s: %s", request.method, request.url.path, exc)
    return unavailable("Workflow service temporarily unavailable")


def install(app: FastAPI) -> None:
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(InvalidJobState, _invalid_state)
    app.add_exception_handler(InvalidJobInput, _invalid_input)
    app.add_exception_handler(TaskQueueUnavailable, _task_queue)
    app.add_exception_handler(psycopg.OperationalError, _database)
    app.add_exception_handler(PoolTimeout, _database)
    app.add_exception_handler(RPCError, _temporal)
