"""DRF-style limit/offset pages: ``{count, next, previous, results}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from antenna_db.job_listing import Page
from api.http_errors import BadRequest

MAX_PAGE_SIZE = 1000


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def int_param(
    request: Request, name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest.field(name, "A valid integer is required.") from None
    if value < minimum:
        raise BadRequest.field(name, f"Ensure this value is greater than or equal to {minimum}.")
    if maximum is not None and value > maximum:
        raise BadRequest.field(name, f"Ensure this value is less than or equal to {maximum}.")
    return value


def page_of(request: Request, default_limit: int) -> Page:
    """``limit`` (or ``page_size``) and ``offset`` from the query string."""
    limit = int_param(request, "limit", minimum=1, maximum=MAX_PAGE_SIZE)
    if limit is None:
        limit = int_param(request, "page_size", minimum=1, maximum=MAX_PAGE_SIZE)
    offset = int_param(request, "offset", minimum=0) or 0
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
