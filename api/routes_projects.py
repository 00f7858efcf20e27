"""``GET /api/v2/projects/`` and ``POST /api/v2/projects/{id}/pipelines/`` (worker registration)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from antenna_db import projects, registration, registration_checks
from api.auth import caller_of, require_perm
from api.bodies import json_object
from api.context import get_context
from api.http_errors import BadRequest, validation_errors
from api.pagination import page_body, page_of
from api.routing import route
from core.errors import InvalidJobInput
from core.schemas import AsyncPipelineRegistrationRequest
from storage import job_workers

# The ADC reads only the first page when it registers: make it hold every project there is.
DEFAULT_PAGE_SIZE = 1000
REGISTER = "create_projectpipelineconfig"


async def list_projects(request: Request) -> JSONResponse:
    ctx = get_context(request)
    page = page_of(request, DEFAULT_PAGE_SIZE)
    async with ctx.connection() as conn:
        count, rows = await projects.list_visible(conn, caller_of(request), page.limit, page.offset)
    results = [
        {
            "id": r["id"],
            "name": r["name"],
            "description": r["description"],
            "draft": r["draft"],
            "feature_flags": r["feature_flags"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    return JSONResponse(page_body(request, page, count, results))


async def register_pipelines(request: Request, project_id: int) -> JSONResponse:
    """Antenna's checks: the project exists (404), then ``create_projectpipelineconfig`` (403),
    then the body (400: also every value its column cannot hold or of no sane shape, and a
    change to what a project the caller may not manage uses)."""
    ctx = get_context(request)
    who = caller_of(request)
    async with ctx.connection() as conn:
        if not await projects.exists(conn, project_id):
            return JSONResponse({"detail": "Not found.", "field": "project"}, status_code=404)
    await require_perm(request, REGISTER, project_id)
    try:
        body = AsyncPipelineRegistrationRequest.model_validate(await json_object(request))
    except ValidationError as err:
        raise BadRequest(validation_errors(err)) from None
    refused = registration_checks.problems(body)
    if refused:
        raise BadRequest(refused)

    async def may_manage(project_ids: list[int]) -> bool:
        for other in project_ids:
            if not await ctx.permissions.has(who, REGISTER, other):
                return False
        return True

    try:
        async with ctx.connection() as conn:
            response = await registration.register(conn, project_id, body, may_manage)
            # How this user's workers are named in their jobs' logs and progress.
            address = request.client.host if request.client is not None else ""
            await job_workers.registered(conn, who.user_id, address, body.processing_service_name)
    except InvalidJobInput as err:
        raise BadRequest.field(err.field, err.message) from None
    return JSONResponse(response.model_dump(mode="json"), status_code=201)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/projects")
    route(r, "GET", "/", list_projects)
    route(r, "POST", "/{project_id}/pipelines/", register_pipelines)
    return r
