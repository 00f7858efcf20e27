"""Who is calling, and what they may do: Antenna's tokens and project permissions.

``Authorization: Token <key>`` on every /api/ endpoint, as DRF TokenAuthentication reads it
(401 with DRF's messages). Antenna lets only superusers call ``/tasks/`` and ``/result/`` (it
checks a codename no role holds); here a user who may run ML jobs on the job's project
(``run_ml_job``: its MLDataManager or ProjectManager role) may too, everyone else gets 403.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from antenna_db.users import Caller
from api.context import get_context

_WWW_AUTHENTICATE = {"WWW-Authenticate": "Token"}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=_WWW_AUTHENTICATE)


def forbidden(detail: str = "You do not have permission to perform this action.") -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


async def require_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller, or 401 ``{"detail": ...}``; kept on request.state."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authentication credentials were not provided.")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "token":
        raise _unauthorized("Invalid token header. Expected 'Token <key>'.")
    who = await get_context(request).tokens.caller(parts[1])
    if who is None:
        raise _unauthorized("Invalid token.")
    if not who.is_active:
        raise _unauthorized("User inactive or deleted.")
    if who.expired:
        raise _unauthorized("Token expired.")
    request.state.caller = who
    return who


def caller_of(request: Request) -> Caller:
    who: Caller = request.state.caller
    return who


async def require_perm(request: Request, codename: str, project_id: int) -> None:
    """403 unless the caller holds ``codename`` on the project (superusers hold all)."""
    if not await get_context(request).permissions.has(caller_of(request), codename, project_id):
        raise forbidden()
