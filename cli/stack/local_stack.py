"""``antenna-jobs up`` / ``down``: the local stack of Temporal, PostgreSQL, Redis and NATS.

``up`` leaves alone every service that already answers at its configured address and starts an
embedded one for each that does not (loopback addresses only), waits until it answers, and
records it in ``<state_dir>/stack.json``. ``down`` stops exactly what that file records, by pid,
after checking the pid still runs the program that was started: never a service it did not start.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cli.stack import processes
from cli.stack.services import Service, StackError, services
from core.durations import Duration
from core.settings import Settings


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_STACK_")

    state_dir: Path = Path(".state")
    start_timeout: Duration = timedelta(seconds=90)


class StartedService(BaseModel):
    name: str
    pid: int
    address: str
    command: list[str]
    data_dir: str
    log: str
    stop_signal: int
    started_at: datetime


class StackState(BaseModel):
    services: dict[str, StartedService] = Field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> StackState:
        path = state_dir / "stack.json"
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text())

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)  # atomic: a crash never leaves half a file


class ServiceReport(BaseModel):
    name: str
    address: str
    action: Literal["running", "started", "stopped", "killed", "gone"]
    pid: int | None = None
    log: str | None = None


def up(settings: Settings, stack: StackSettings | None = None) -> list[ServiceReport]:
    """Make every service answer; start embedded ones for those that do not."""
    stack = stack or StackSettings()
    state = StackState.load(stack.state_dir)
    reports = []
    for service in services(settings):
        if service.answers():
            service.ensure_ready()
            reports.append(
                ServiceReport(name=service.name, address=str(service.endpoint), action="running")
            )
            continue
        started = _start(service, stack)
        # Recorded before waiting, so `down` can stop it even if this command dies meanwhile.
        state.services[service.name] = started
        state.save(stack.state_dir)
        _wait_until_answers(service, started, stack.start_timeout.total_seconds())
        service.ensure_ready()
        reports.append(
            ServiceReport(
                name=service.name,
                address=started.address,
                action="started",
                pid=started.pid,
                log=started.log,
            )
        )
    return reports


def down(stack: StackSettings | None = None, only: set[str] | None = None) -> list[ServiceReport]:
    """Stop the services ``up`` started (all, or the names in ``only``), newest first."""
    stack = stack or StackSettings()
    state = StackState.load(stack.state_dir)
    reports = []
    for name in reversed(list(state.services)):
        if only is not None and name not in only:
            continue
        entry = state.services[name]
        if processes.is_ours(entry.pid, entry.command[0]):
            killed = processes.stop(entry.pid, sig=entry.stop_signal)
            action: Literal["stopped", "killed", "gone"] = "killed" if killed else "stopped"
        else:
            action = "gone"
        reports.append(
            ServiceReport(
                name=name, address=entry.address, action=action, pid=entry.pid, log=entry.log
            )
        )
        del state.services[name]
        state.save(stack.state_dir)
    return reports


def _start(service: Service, stack: StackSettings) -> StartedService:
    if not service.endpoint.is_local:
        raise StackError(
            service.name,
            f"nothing answers at {service.endpoint}, and it is not a local address to start on",
        )
    if processes.port_open(service.endpoint.host, service.endpoint.port):
        raise StackError(
            service.name, f"{service.endpoint} is taken by something that is not {service.name}"
        )
    state_dir = stack.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    launch = service.launch(state_dir)
    log = state_dir / "logs" / f"{service.name}.log"
    proc = processes.spawn(launch.command, log, env=launch.env, user=launch.user)
    return StartedService(
        name=service.name,
        pid=proc.pid,
        address=str(service.endpoint),
        command=launch.command,
        data_dir=str(launch.data_dir),
        log=str(log),
        stop_signal=int(launch.stop_signal),
        started_at=datetime.now(UTC),
    )


def _wait_until_answers(service: Service, started: StartedService, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.answers():
            return
        if not processes.is_running(started.pid):
            tail = processes.log_tail(Path(started.log))
            raise StackError(service.name, f"exited while starting; log {started.log}:\n{tail}")
        time.sleep(0.2)
    raise StackError(service.name, f"did not answer within {timeout:.0f} s; log {started.log}")
