"""Choosing the push-mode processing service of a SYNC_API job: among the services linked to the
job's pipeline and project that have an endpoint URL, the fastest one answering ``/readyz``
(Antenna's choose_processing_service_for_pipeline). Every service checked gets its liveness
recorded, as Antenna's check_processing_services_online does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from activities.sync_api.models import ServiceChoice
from antenna_db import processing_services


@dataclass(frozen=True)
class Probe:
    service_id: int
    name: str
    endpoint_url: str
    latency: float | None  # None: not ready
    problem: str = ""


def service_url(endpoint_url: str, path: str) -> str:
    """``{endpoint}/{path}``, keeping any path prefix of the endpoint URL."""
    return f"{endpoint_url.rstrip('/')}/{path.lstrip('/')}"


async def probe(http: httpx.AsyncClient, row: dict[str, Any], wait: timedelta) -> Probe:
    started = time.monotonic()
    problem = ""
    try:
        response = await http.get(
            service_url(row["endpoint_url"], "readyz"), timeout=wait.total_seconds()
        )
        if response.is_success:
            latency = time.monotonic() - started
            return Probe(row["id"], row["name"], row["endpoint_url"], latency)
        problem = f"/readyz answered {response.status_code}"
    except httpx.HTTPError as err:
        problem = f"/readyz failed: {type(err).__name__} {err}".strip()
    return Probe(row["id"], row["name"], row["endpoint_url"], None, problem)


async def choose_live_service(
    conn: psycopg.AsyncConnection[Any], http: httpx.AsyncClient, job_id: int, wait: timedelta
) -> tuple[ServiceChoice | None, list[Probe]]:
    """The fastest ready service of the job (None if none is), and every probe made."""
    rows = await processing_services.sync_candidates(conn, job_id)
    probes = list(await asyncio.gather(*(probe(http, row, wait) for row in rows)))
    await processing_services.record_probes(conn, [(p.service_id, p.latency) for p in probes])
    ready = sorted((p for p in probes if p.latency is not None), key=lambda p: p.latency or 0.0)
    if not ready:
        return None, probes
    best = ready[0]
    choice = ServiceChoice(
        service_id=best.service_id,
        name=best.name,
        endpoint_url=best.endpoint_url,
        latency=best.latency or 0.0,
    )
    return choice, probes
