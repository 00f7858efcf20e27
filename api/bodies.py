"""Reading request bodies ourselves, so a bad body is a 400 that names the field (not a 422)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from api.http_errors import BadRequest


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest.field("body", f"JSON parse error: {err}") from None


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest.field(
            "body", f"Expected a JSON object, got {type(body).__name__.replace('dict', 'object')}."
        )
    return body


def strict_int(body: dict[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    """An optional integer field; like DRF's IntegerField, "5" is 5 and true is not a number."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise BadRequest.field(name, "A valid integer is required.")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise BadRequest.field(name, "A valid integer is required.")
    if minimum is not None and number < minimum:
        raise BadRequest.field(name, f"Ensure this value is greater than or equal to {minimum}.")
    return number
