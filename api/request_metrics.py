"""Request metrics of the API: ``antenna_jobs_api_request_seconds{route,method,status}``.

A pure ASGI middleware (no body buffering, so a 150 MB result post streams through as before). The
route label is the matched route's template, which the router writes into the scope while it
dispatches; a request that matched no route counts under ``unmatched``, so a scanner's random
paths cannot grow the label set. A request whose handler raised counts as 500, the answer the
server error middleware (outside this one) then gives.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import API_REQUEST_SECONDS

UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            API_REQUEST_SECONDS.labels(route_of(scope), scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
