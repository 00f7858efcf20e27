"""The stand-in for Antenna's Celery worker (tests/fakes/antenna_worker.py) as a real process a
test owns: started on the test's own queue, SIGKILLed with its pool children (its process group,
recorded by pid, never by name), restarted; and the Antenna side of a cancel (Job.cancel's
``revoke(task_id, terminate=True)``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery

from core.settings import DatabaseSettings
from tests.helpers.broker import BROKER_URL, delete_queue
from tests.helpers.processes import Proc

REPO = Path(__file__).resolve().parents[2]


class AntennaCeleryWorker:
    """``celery -A tests.fakes.antenna_worker worker -Q <queue>`` (prefork, two children)."""

    def __init__(
        self, database: DatabaseSettings, queue: str, log_dir: Path, duration: float
    ) -> None:
        self.queue = queue
        self.name = f"fake-antenna-{uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANTENNA_JOBS_")},
            "PYTHONPATH": str(REPO),
            "FAKE_ANTENNA_BROKER_URL": BROKER_URL,
            "FAKE_ANTENNA_DB_URL": database.url,
            "FAKE_ANTENNA_DB_SCHEMA": database.schema_name,
            "FAKE_ANTENNA_DURATION": str(duration),
        }
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self) -> Proc:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.fakes.antenna_worker",
            "worker",
            "-Q",
            self.queue,
            "-n",
            self.name,
            "-P",
            "prefork",
            "-c",
            "2",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        log = self.log_dir / f"antenna-celery-{len(self.started) + 1}.log"
        proc = Proc(f"antenna-celery-{len(self.started) + 1}", command, log, self.env)
        proc.start()
        self.started.append(proc)
        return proc

    def ready(self) -> bool:
        """The worker answers a ping (its control consumer is up, so it consumes too)."""
        app = control_app()
        try:
            replies = app.control.ping(destination=[self.name], timeout=0.5) or []
        finally:
            app.close()
        return any(self.name in reply for reply in replies)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a host or container dying)."""
        proc = self.started[-1]
        if proc.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            assert proc.proc is not None
            proc.proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                assert proc.proc is not None
                try:
                    proc.proc.wait(timeout=15)
                except Exception:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(60)}" for p in self.started)


def control_app() -> Celery:
    return Celery(broker=BROKER_URL, set_as_current=False)


def revoke_as_antenna(task_id: str) -> None:
    """What Antenna's Job.cancel sends for a job run by Celery."""
    app = control_app()
    try:
        app.control.revoke(task_id, terminate=True)
    finally:
        app.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        # A zombie (exited, not yet reaped by its parent) no longer runs anything.
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return False


@contextlib.contextmanager
def antenna_celery_worker(
    database: DatabaseSettings, log_dir: Path, duration: float, **_: Any
) -> Iterator[AntennaCeleryWorker]:
    """A stand-in worker on a queue of its own (deleted at the end), started."""
    queue = f"aj-test-antenna-{uuid.uuid4().hex[:12]}"
    worker = AntennaCeleryWorker(database, queue, log_dir, duration)
    worker.start()
    try:
        yield worker
    except BaseException:
        print(worker.logs())
        raise
    finally:
        worker.stop_all()
        delete_queue(queue)
