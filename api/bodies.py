"""Reading request bodies ourselves, so a bad body is a 400 that names the field (not a 422).

Every body is read into one buffer, at most ``ANTENNA_JOBS_API_MAX_BODY_BYTES`` (413 past it,
before reading when Content-Length says so). JSON nested deeper than MAX_DEPTH is refused naming
the top-level field it is in; deeper than Python's parser can go (RecursionError), as the body.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from api.context import get_context
from api.http_errors import BadRequest, BodyTooLarge
from core import json_codec
from core.wire_types import MAX_DEPTH, NESTED_TOO_DEEPLY, json_problem


async def read_body(request: Request, limit: int | None = None) -> bytearray:
    """The request body in one buffer (no list of chunks to join); BodyTooLarge past ``limit``."""
    if limit is None:
        limit = get_context(request).settings.api.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return body


def parse_json(raw: bytes | bytearray) -> Any:
    if not raw.strip():
        return {}
    try:
        body = json_codec.loads(raw)
    except RecursionError:
        raise BadRequest.field("body", NESTED_TOO_DEEPLY) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest.field("body", f"JSON parse error: {err}") from None
    problem = json_problem(body, MAX_DEPTH, depth_only=True)
    if problem:
        path = problem[0].lstrip(".")
        top = re.split(r"[.\[]", path, maxsplit=1)[0] if isinstance(body, dict) else ""
        raise BadRequest.field(top or "body", NESTED_TOO_DEEPLY)
    return body


async def json_body(request: Request) -> Any:
    return parse_json(await read_body(request))


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest.field(
            "body", f"Expected a JSON object, got {type(body).__name__.replace('dict', 'object')}."
        )
    return body
