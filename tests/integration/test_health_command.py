"""``antenna-jobs health api|worker|bridge`` (the compose healthchecks): healthy against the real
services, and exit 1 naming the dependency that does not answer."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.stack import processes
from core.settings import Settings
from tests.helpers.processes import Proc, child_env, cli_env, invoke, wait_port

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def closed_port() -> int:
    return processes.free_port()  # nothing listens there


async def test_a_worker_with_its_services_up_is_healthy(settings: Settings) -> None:
    result = await invoke(cli_env(settings), "health", "worker")
    assert result.exit_code == 0, result.output
    for check in ("postgres: ok", "redis: ok", "nats: ok", "temporal: ok", "worker healthy"):
        assert check in result.output, result.output


async def test_an_unreachable_dependency_makes_the_role_unhealthy(settings: Settings) -> None:
    env = {**cli_env(settings), "ANTENNA_JOBS_NATS_URL": f"nats://127.0.0.1:{closed_port()}"}
    result = await invoke(env, "health", "worker")
    assert result.exit_code == 1, result.output
    assert "nats: FAILED" in result.output and "worker unhealthy: nats" in result.output


async def test_the_bridge_checks_antennas_broker(settings: Settings) -> None:
    env = {**cli_env(settings), "ANTENNA_JOBS_ANTENNA_BROKER_URL": BROKER}
    result = await invoke(env, "health", "bridge")
    assert result.exit_code == 0, result.output
    assert "broker: ok" in result.output
    env["ANTENNA_JOBS_ANTENNA_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    result = await invoke(env, "health", "bridge")
    assert result.exit_code == 1 and "bridge unhealthy: broker" in result.output, result.output


async def test_the_api_check_asks_the_running_api(
    settings: Settings,
    pool: object,  # the session's schemas, migrated (the API process migrates nothing then)
    tmp_path: Path,
) -> None:
    port = processes.free_port()
    env = {**cli_env(settings), "ANTENNA_JOBS_API_PORT": str(port)}
    result = await invoke(env, "health", "api")
    assert result.exit_code == 1 and "api unhealthy: api" in result.output, result.output
    api = Proc(
        "api",
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        tmp_path / "api.log",
        child_env(settings),
    ).start()
    try:
        await wait_port(port, proc=api)
        result = await invoke(env, "health", "api")
        assert result.exit_code == 0, result.output
        assert "api: ok" in result.output and "api healthy" in result.output
    finally:
        api.stop()
