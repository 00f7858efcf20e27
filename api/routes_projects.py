"""``GET /api/v2/projects/`` and ``POST /api/v2/projects/{id}/pipelines/`` (worker registration)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.bodies import json_object
from api.context import get_context
from api.http_errors import BadRequest, validation_errors
from api.pagination import page_body, page_of
from api.registration import register
from api.routing import route
from core.errors import InvalidJobInput
from core.schemas import AsyncPipelineRegistrationRequest

# The ADC reads only the first page when it registers: make it hold every project there is.
DEFAULT_PAGE_SIZE = 1000


async def list_projects(request: Request) -> JSONResponse:
    ctx = get_context(request)
    page = page_of(request, DEFAULT_PAGE_SIZE)
    async with ctx.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM projects")
        count_row = await cur.fetchone()
        cur = await conn.execute(
            "SELECT id, name, async_pipeline_workers, created_at FROM projects"
            " ORDER BY id LIMIT %s OFFSET %s",
            (page.limit, page.offset),
        )
        rows = await cur.fetchall()
    results = [
        {
            "id": r["id"],
            "name": r["name"],
            "feature_flags": {"async_pipeline_workers": r["async_pipeline_workers"]},
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    count = int(count_row["n"]) if count_row else 0
    return JSONResponse(page_body(request, page, count, results))


async def register_pipelines(request: Request, project_id: int) -> JSONResponse:
    ctx = get_context(request)
    try:
        body = AsyncPipelineRegistrationRequest.model_validate(await json_object(request))
    except ValidationError as err:
        raise BadRequest(validation_errors(err)) from None
    try:
        async with ctx.connection() as conn:
            response = await register(conn, project_id, body)
    except InvalidJobInput as err:
        return JSONResponse({"detail": err.message, "field": err.field}, status_code=404)
    return JSONResponse(response.model_dump(mode="json"), status_code=201)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v2/projects")
    route(r, "GET", "/", list_projects)
    route(r, "POST", "/{project_id}/pipelines/", register_pipelines)
    return r
