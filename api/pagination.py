"""DRF-style limit/offset pages: ``{count, next, previous, results}``.

Query integers are bounded so none reaches PostgreSQL out of its range: ``limit``/``page_size`` at
most MAX_PAGE_SIZE, ``offset`` at most MAX_OFFSET, ids at most bigint's maximum.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from antenna_db.job_listing import Page
from api.http_errors import BadRequest
from core.wire_types import INT4_MAX, INT8_MAX, text_problem

MAX_PAGE_SIZE = 1000
MAX_OFFSET = INT4_MAX


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def text_param(request: Request, name: str) -> str | None:
    """A query string value PostgreSQL can compare (no U+0000)."""
    raw = request.query_params.get(name)
    if raw is not None:
        problem = text_problem(raw)
        if problem:
            raise BadRequest.field(name, problem)
    return raw


def int_param(request: Request, name: str, *, minimum: int, maximum: int = INT8_MAX) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest.field(name, "A valid integer is required.") from None
    if value < minimum:
        raise BadRequest.field(name, f"Ensure this value is greater than or equal to {minimum}.")
    if value > maximum:
        raise BadRequest.field(name, f"Ensure this value is less than or equal to {maximum}.")
    return value


def page_of(request: Request, default_limit: int) -> Page:
    """``limit`` (or ``page_size``) and ``offset`` from the query string."""
    limit = int_param(request, "limit", minimum=1, maximum=MAX_PAGE_SIZE)
    if limit is None:
        limit = int_param(request, "page_size", minimum=1, maximum=MAX_PAGE_SIZE)
    offset = int_param(request, "offset", minimum=0, maximum=MAX_OFFSET) or 0
    return Page(limit=limit or default_limit, offset=offset)


def page_body(request: Request, page: Page, count: int, results: list[Any]) -> dict[str, Any]:
    url = request.url
    next_url = None
    if page.offset + page.limit < count:
        next_url = str(url.include_query_params(limit=page.limit, offset=page.offset + page.limit))
    previous_url = None
    if page.offset > 0:
        previous_offset = max(page.offset - page.limit, 0)
        if previous_offset == 0:
            previous_url = str(
                url.remove_query_params("offset").include_query_params(limit=page.limit)
            )
        else:
            previous_url = str(url.include_query_params(limit=page.limit, offset=previous_offset))
    return {"count": count, "next": next_url, "previous": previous_url, "results": results}
