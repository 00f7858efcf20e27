"""Real processes a test owns: worker subprocesses it may SIGKILL, and servers it may restart.

Everything is started on free ports with data in the test's tmp dir and stopped by the pid we
recorded (cli.stack.processes), never by name. The shared services are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from cli.main import app
from cli.stack import processes
from cli.stack.services import find_program
from core import search_attributes
from core.settings import Settings, settings_env
from tests.helpers import eventually
from tests.helpers.workflow_faults import MARKERS

VENV_BIN = Path(sys.executable).parent


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment without its own ANTENNA_JOBS_* values, plus ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANTENNA_JOBS_")}
    return {**base, "PYTHONUNBUFFERED": "1", **settings_env(settings), **extra}


def cli_env(settings: Settings) -> dict[str, str]:
    """What the CLI (in-process through CliRunner, or a subprocess on top of this process's
    environment) needs to reach this test's schemas, Temporal and task queue."""
    return {
        "ANTENNA_JOBS_DATABASE_SCHEMA": settings.database.schema_name,
        "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": settings.database.jobs_schema,
        "ANTENNA_JOBS_TEMPORAL_ADDRESS": settings.temporal.address,
        "ANTENNA_JOBS_TASK_QUEUE": settings.jobs.task_queue,
    }


def demo_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    """The environment of an ``antenna-jobs demo`` subprocess: this test's schemas and
    Temporal, stack state of its own, and no task queue (the demo makes its own)."""
    env = {**os.environ, **cli_env(settings), "ANTENNA_JOBS_STACK_STATE_DIR": str(state_dir)}
    env.pop("ANTENNA_JOBS_TASK_QUEUE", None)
    return env


async def run_demo(settings: Settings, state_dir: Path, *args: str) -> str:
    """``python -m cli demo *args`` run to its end (150 s at most) on this test's database and
    Temporal; its output (stdout and stderr), once it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "demo",
        *args,
        env=demo_env(settings, state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


# The demo's last line (both modes), for a 40-image demo.
DEMO_FINAL_LINE = re.compile(
    r"^job (\d+) SUCCESS: 40 images, (\d+) detections, (\d+) classifications"
    r" in [\d.]+ s \([\d.]+ images/s\)$"
)


class Proc:
    """One subprocess with its log file; ``kill`` is SIGKILL, ``stop`` is SIGTERM then wait."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.proc = processes.spawn(self.command, self.log, env=self.env, detach=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.running():
            processes.stop(self.pid, timeout=timeout)
            assert self.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        return processes.log_tail(self.log, lines)


class WorkerProcesses:
    """``antenna-jobs worker`` subprocesses of one test, all stopped when the test ends.

    They create no reconcile Schedule unless ``schedule``: one left in the session's Temporal
    would start reconcile runs on this test's queue long after the test.
    """

    def __init__(
        self, settings: Settings, log_dir: Path, *, schedule: bool = False, **extra_env: str
    ) -> None:
        if not schedule:
            extra_env = {"ANTENNA_JOBS_RECONCILE_INTERVAL": "0", **extra_env}
        self.env = child_env(settings, **extra_env)
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self) -> Proc:
        name = f"worker-{len(self.started) + 1}"
        command = [str(VENV_BIN / "antenna-jobs"), "worker"]
        proc = Proc(name, command, self.log_dir / f"{name}.log", self.env).start()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(timeout=15)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.started)

    def faults(self) -> list[str]:
        """Workflow faults (non-determinism, failed evictions) in the processes' logs: what the
        in-process watch (tests/helpers/workflow_faults.py) finds for in-process workers."""
        found: list[str] = []
        for proc in self.started:
            with contextlib.suppress(OSError):
                for line in proc.log.read_text(errors="replace").splitlines():
                    if any(marker in line.lower() for marker in MARKERS):
                        found.append(f"{proc.name}: {line}")
        return found


@contextlib.asynccontextmanager
async def child_process(*args: str, **options: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """``asyncio.create_subprocess_exec(*args, **options)``, killed if the block leaves it
    running."""
    proc = await asyncio.create_subprocess_exec(*args, **options)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def sigterm_exit_code(proc: asyncio.subprocess.Process, within: float) -> int:
    """SIGTERM, as a deploy stops a process; its exit code (within ``within`` seconds)."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), within)


@contextlib.contextmanager
def worker_processes(
    settings: Settings, log_dir: Path, *, schedule: bool = False, **extra_env: str
) -> Iterator[WorkerProcesses]:
    workers = WorkerProcesses(settings, log_dir, schedule=schedule, **extra_env)
    try:
        yield workers
    except BaseException:
        print(workers.logs())
        raise
    finally:
        workers.stop_all()
    faults = workers.faults()
    assert not faults, "workflow faults in the worker processes' logs:\n" + "\n".join(faults[:10])


async def wait_port(port: int, within: float = 60.0, proc: Proc | None = None) -> None:
    """Until something listens on 127.0.0.1:``port``; fails at once if ``proc`` exits."""

    async def listening() -> bool:
        if proc is not None and not proc.running():
            raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
        return processes.port_open("127.0.0.1", port, timeout=0.5)

    await eventually(listening, within=within)


class OwnedServer:
    """A server this test started, on a free port, restartable on the same data."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = processes.free_port()
        self.proc: Proc | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        self.starts += 1
        log = self.data_dir.parent / f"{self.name}-{self.starts}.log"
        self.proc = Proc(self.name, self.command(), log, dict(os.environ)).start()
        await wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)

    async def restart(self) -> None:
        self.stop()
        await self.start()


class OwnedTemporal(OwnedServer):
    """``temporal server start-dev`` with a SQLite file, so a restart keeps every workflow."""

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "temporal"), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--db-filename", str(self.data_dir / "temporal.db"),
            "--log-level", "error",
            *search_attributes.dev_server_flags(),
        ]  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class OwnedNats(OwnedServer):
    """``nats-server -js`` with a file store, so streams and consumers survive a restart."""

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(self.port),
            "-js", "-sd", str(self.data_dir),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class OwnedRedis(OwnedServer):
    """A redis-server nobody else uses, so the test may FLUSHALL it."""

    def command(self) -> list[str]:
        return [
            find_program("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.asynccontextmanager
async def owned(server: OwnedServer):  # type: ignore[no-untyped-def]
    server.data_dir.mkdir(parents=True, exist_ok=True)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a real server, to make it unreachable for one client
    without touching it: ``cut()`` drops every connection and refuses new ones until
    ``restore()`` listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def invoke(env: dict[str, str], *args: str) -> Result:
    """``antenna-jobs *args`` in-process with ``env`` (in a thread: each command runs
    ``asyncio.run`` itself)."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
