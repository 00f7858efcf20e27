"""Issue 7: a schemathesis run over the API's own OpenAPI document finds no 5xx.

The API runs as a real uvicorn subprocess against the session's PostgreSQL schema, NATS and the
Temporal dev server. The job endpoints read their bodies by hand (400s that name the field), so
their OpenAPI entries have no request schema: schemathesis fuzzes methods and path parameters
there; tests/api/test_api_result_properties.py and test_api_input_bounds.py cover the bodies.
Bounded in CI (ANTENNA_JOBS_TEST_PROFILE=ci); `make fuzz` runs more examples.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from cli.stack import processes
from tests.helpers import eventually
from tests.helpers.db import create_token
from tests.helpers.processes import child_env

pytestmark = pytest.mark.fuzz
EXAMPLES = 300 if os.environ.get("ANTENNA_JOBS_TEST_PROFILE") == "full" else 15


@dataclass(frozen=True)
class RunningApi:
    url: str
    key: str


@pytest_asyncio.fixture(name="running_api")
async def running_api_fixture(settings, pool, tmp_path: Path) -> AsyncIterator[RunningApi]:
    port = processes.free_port()
    log = tmp_path / "api.log"
    proc = processes.spawn(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        log,
        env=child_env(settings, ANTENNA_JOBS_API_DOCS="true"),  # the OpenAPI document
        detach=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                assert proc.poll() is None, processes.log_tail(log)
                try:
                    return (await client.get(f"{url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=60, interval=0.2)
        async with pool.connection() as conn:
            key = await create_token(conn, "schemathesis")
        yield RunningApi(url=url, key=key)
    finally:
        processes.stop(proc.pid)
        proc.wait(10)  # reaped, so no "still running" warning later
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line]
        assert errors == [], processes.log_tail(log, 60)


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_no_server_errors(running_api: RunningApi, mode):
    # schemathesis' pytest loaders do not run under this pytest; its strategies do.
    schema = schemathesis.openapi.from_url(f"{running_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    auth = {"Authorization": f"Token {running_api.key}"}
    seen: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(base_url=running_api.url, headers=auth, timeout=30)
            seen.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
            assert response.status_code < 500, (seen[-1], response.text[:500])
            refused = case.call(
                base_url=running_api.url, headers={"Authorization": "Token nope"}, timeout=30
            )
            assert refused.status_code == 401, (seen[-1], refused.status_code)

        try:
            check()
        except Unsatisfiable:
            # Nothing of this operation can be made invalid (no parameters): positive covers it.
            assert mode == schemathesis.GenerationMode.NEGATIVE
    assert len(seen) >= len(operations)
