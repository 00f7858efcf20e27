"""Routes that answer with and without a trailing slash, never with a redirect.

The ADC calls ``GET {base}/jobs`` without a slash and POSTs with one; a 307 to a POST would make
some clients drop the body, so both spellings are real routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter


def route(
    router: APIRouter, method: str, path: str, endpoint: Callable[..., Any], status_code: int = 200
) -> None:
    bare = path.rstrip("/")
    router.add_api_route(bare + "/", endpoint, methods=[method], status_code=status_code)
    router.add_api_route(
        bare, endpoint, methods=[method], status_code=status_code, include_in_schema=False
    )
