"""``up``/``down`` on this machine, on free ports with state dirs of their own.

The shared services are never touched: every embedded server here binds an unused port, and
``down`` is checked to stop only what ``up`` recorded.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from cli.stack import local_stack, processes
from cli.stack.services import Endpoint, Nats, Postgres, Redis, StackError, Temporal
from core import search_attributes
from core.settings import (
    DatabaseSettings,
    NatsSettings,
    RedisSettings,
    Settings,
    TemporalSettings,
)

# Starts embedded PostgreSQL, Redis, NATS and Temporal servers (tests/helpers/fast.py).
pytestmark = pytest.mark.services


def temporal_settings() -> TemporalSettings:
    port, ui = processes.free_port(), processes.free_port()
    return TemporalSettings(address=f"127.0.0.1:{port}", ui_url=f"http://127.0.0.1:{ui}")


@pytest.fixture
def stack(tmp_path):
    stack = local_stack.StackSettings(state_dir=tmp_path / "state")
    yield stack
    local_stack.down(stack)  # whatever a failed test left running


def test_up_starts_temporal_only_when_it_does_not_answer_and_down_stops_it(stack):
    settings = Settings(temporal=temporal_settings())
    reports = {r.name: r for r in local_stack.up(settings, stack)}

    # The shared services answer, so they are left alone.
    assert {reports[n].action for n in ("postgres", "redis", "nats")} == {"running"}
    started = reports["temporal"]
    assert started.action == "started" and started.pid is not None
    assert Temporal(settings).answers()
    recorded = json.loads((stack.state_dir / "stack.json").read_text())
    assert set(recorded["services"]) == {"temporal"}
    assert (stack.state_dir / "temporal.db").exists()

    # Idempotent: a second up finds it answering and starts nothing.
    assert {r.action for r in local_stack.up(settings, stack)} == {"running"}

    stopped = local_stack.down(stack)
    assert [(r.name, r.action) for r in stopped] == [("temporal", "stopped")]
    assert not processes.is_running(started.pid)
    assert not Temporal(settings).answers()
    assert local_stack.down(stack) == []


async def test_temporal_started_by_up_has_our_search_attributes(stack):
    settings = Settings(temporal=temporal_settings())
    local_stack.up(settings, stack)
    cli = Temporal(settings)._cli
    done = await asyncio.to_thread(
        subprocess.run,
        [
            cli,
            "operator",
            "search-attribute",
            "list",
            "--address",
            settings.temporal.address,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    custom = json.loads(done.stdout)["customAttributes"]
    assert {key.name for key in search_attributes.ALL} <= set(custom)
    assert {"AntennaPipelineSlug", "AntennaJobType"} <= set(custom)


def test_embedded_postgres_redis_and_nats_start_answer_and_stop(stack):
    ports = [processes.free_port() for _ in range(3)]
    settings = Settings(
        database=DatabaseSettings(url=f"postgresql://postgres@127.0.0.1:{ports[0]}/antenna"),
        redis=RedisSettings(url=f"redis://127.0.0.1:{ports[1]}/0"),
        nats=NatsSettings(url=f"nats://127.0.0.1:{ports[2]}"),
        temporal=temporal_settings(),
    )
    reports = {r.name: r for r in local_stack.up(settings, stack)}
    assert {r.action for r in reports.values()} == {"started"}

    with psycopg.connect(settings.database.url) as conn:  # the configured database was created
        assert conn.execute("SELECT current_database()").fetchone() == ("antenna",)
    client = redis.Redis.from_url(settings.redis.url)
    assert client.ping()
    client.close()
    info = Nats(settings).server_info()
    assert info is not None and info["jetstream"] is True

    stopped = {r.name: r.action for r in local_stack.down(stack)}
    assert stopped == dict.fromkeys(("temporal", "nats", "redis", "postgres"), "stopped")
    for service in (Postgres(settings), Redis(settings), Nats(settings)):
        assert not service.answers()
    for report in reports.values():
        assert report.pid is not None and not processes.is_running(report.pid)


def test_down_never_signals_a_pid_that_no_longer_runs_what_up_started(stack):
    # A recorded pid now belonging to another program (pid reuse) must be left alone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = local_stack.StackState()
        state.services["nats"] = local_stack.StartedService(
            name="nats",
            pid=other.pid,
            address="127.0.0.1:1",
            command=["/usr/bin/nats-server", "-p", "1"],
            data_dir="/nonexistent",
            log="/nonexistent.log",
            stop_signal=15,
            started_at="2026-01-01T00:00:00Z",
        )
        state.save(stack.state_dir)
        assert [r.action for r in local_stack.down(stack)] == ["gone"]
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_non_local_address_is_never_started_on(stack):
    # Checked before anything is contacted or spawned (no traffic leaves this machine).
    service = Nats(Settings(nats=NatsSettings(url="nats://192.0.2.1:4222")))
    assert not service.endpoint.is_local
    with pytest.raises(StackError, match="not a local address"):
        local_stack._start(service, stack)
    assert Endpoint("localhost", 1).is_local and Endpoint("127.0.0.2", 1).is_local


def test_cli_up_and_down(tmp_path):
    temporal = temporal_settings()
    env = {
        "ANTENNA_JOBS_TEMPORAL_ADDRESS": temporal.address,
        "ANTENNA_JOBS_TEMPORAL_UI_URL": temporal.ui_url,
        "ANTENNA_JOBS_STACK_STATE_DIR": str(tmp_path / "state"),
    }
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["up"], env=env)
        assert up.exit_code == 0, up.output
        assert "temporal" in up.output and "started" in up.output
        assert "already running" in up.output  # the shared services
    finally:
        down = runner.invoke(app, ["down"], env=env)
    assert down.exit_code == 0, down.output
    assert "stopped" in down.output
    again = runner.invoke(app, ["down"], env=env)
    assert "nothing to stop" in again.output
