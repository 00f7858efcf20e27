"""``antenna-jobs health api|worker|bridge``: is this process's role able to do its work?

The compose healthchecks run it inside each container. It checks the process itself (the API's
``/healthz`` on its port, the worker's ``/metrics`` when it serves one) and every dependency the
role needs, each with its own timeout: PostgreSQL (a query), Redis (PING), NATS (a connection
with JetStream answering), Temporal (the namespace described) and, for the bridge, Antenna's
broker. One line per check; exit 1 if any failed, naming it.
"""

from __future__ import annotations

import asyncio
import enum
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Annotated

import nats
import redis.asyncio as redis_asyncio
import typer
from kombu.connection import Connection
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from cli.commands.context import console, err_console, load_settings
from core.settings import Settings
from core.temporal_client import connect_temporal
from storage import server

TIMEOUT = 5.0


class Role(enum.StrEnum):
    api = "api"
    worker = "worker"
    bridge = "bridge"


Check = Callable[[], Awaitable[None]]


def checks_for(role: Role, settings: Settings) -> dict[str, Check]:
    """What ``role`` needs, by name, in the order they are checked."""

    async def postgres() -> None:
        await server.ping(settings.database.url, connect_timeout=5)

    async def redis() -> None:
        client = redis_asyncio.from_url(settings.redis.url, socket_timeout=TIMEOUT)
        try:
            await client.ping()
        finally:
            await client.aclose()

    async def nats_js() -> None:
        nc = await nats.connect(
            settings.nats.url, connect_timeout=TIMEOUT, max_reconnect_attempts=0
        )
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    async def temporal() -> None:
        client = await connect_temporal(settings.temporal)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )

    async def api_http() -> None:
        await asyncio.to_thread(http_ok, f"http://127.0.0.1:{settings.api.port}/healthz")

    async def worker_metrics() -> None:
        port = settings.worker.metrics_port
        if port is not None:
            await asyncio.to_thread(http_ok, f"http://127.0.0.1:{port}/metrics")

    async def broker() -> None:
        await asyncio.to_thread(broker_ok, settings.antenna.require_broker_url())

    if role is Role.api:
        return {"api": api_http, "postgres": postgres, "nats": nats_js, "temporal": temporal}
    if role is Role.worker:
        return {
            "worker metrics": worker_metrics,
            "postgres": postgres,
            "redis": redis,
            "nats": nats_js,
            "temporal": temporal,
        }
    return {"broker": broker, "postgres": postgres, "temporal": temporal}


def http_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


def broker_ok(url: str) -> None:
    with Connection(url, connect_timeout=TIMEOUT) as conn:
        conn.ensure_connection(max_retries=1)


async def run_checks(checks: dict[str, Check]) -> dict[str, str | None]:
    """Name -> None (passed) or the reason it failed; all run side by side."""

    async def one(check: Check) -> str | None:
        try:
            await asyncio.wait_for(check(), TIMEOUT * 2)
        except Exception as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return None

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


def health(role: Annotated[Role, typer.Argument(help="the role of this process")]) -> None:
    """Check this role and its dependencies (compose healthchecks); exit 1 if any fails."""
    started = time.monotonic()
    results = asyncio.run(run_checks(checks_for(role, load_settings())))
    failed = {name: why for name, why in results.items() if why is not None}
    for name, why in results.items():
        line = f"{name}: {'ok' if why is None else 'FAILED ' + why}"
        (console if why is None else err_console).print(line, markup=False, highlight=False)
    if failed:
        err_console.print(
            f"{role.value} unhealthy: {', '.join(failed)}", markup=False, highlight=False
        )
        raise typer.Exit(1)
    console.print(f"{role.value} healthy ({time.monotonic() - started:.1f} s)", markup=False)
