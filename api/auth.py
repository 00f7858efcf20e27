"""``Authorization: Token <key>`` on every /api/ endpoint, as DRF TokenAuthentication does."""

from __future__ import annotations

from fastapi import HTTPException, Request

from api.context import get_context

_WWW_AUTHENTICATE = {"WWW-Authenticate": "Token"}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=_WWW_AUTHENTICATE)


async def require_token(request: Request) -> int:
    """FastAPI dependency: the caller's token id, or 401 ``{"detail": ...}``."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authentication credentials were not provided.")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "token":
        raise _unauthorized("Invalid token header. Expected 'Token <key>'.")
    token_id = await get_context(request).tokens.verify(parts[1])
    if token_id is None:
        raise _unauthorized("Invalid token.")
    return token_id
