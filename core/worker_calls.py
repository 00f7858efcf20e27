"""Which processing workers serve a job: who a worker is, what it was served, how it is shown,
its throughput and the job's ETA from the recent rate.

A worker is the token's user plus the client's identity: the name its ``client_info`` gives
(``name``, ``hostname``, ``worker_id`` or ``host``) or else its address, and its User-Agent. It is
shown by that name, or the processing service name its user registered from that address (the
ADC sends no client_info), or its address. The API writes the calls it served in batches
(api/worker_tally.py, into storage/job_workers.py); everything else reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

# client_info keys that name the worker (the first one present, as a string, wins).
NAME_KEYS = ("name", "hostname", "worker_id", "host")
# Longest name, address or User-Agent kept (a client may send anything).
MAX_TEXT = 200
# A worker's recent throughput counts the results it posted within about this window.
RECENT_WINDOW_SECONDS = 300.0
# A throughput is never figured over less than this (a worker's first seconds would read high).
MIN_RATE_SECONDS = 10.0


def client_name(client_info: Mapping[str, Any] | None) -> str | None:
    if not client_info:
        return None
    for key in NAME_KEYS:
        value = client_info.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()[:MAX_TEXT]
    return None


@dataclass(frozen=True)
class Identity:
    """Who made a worker call."""

    user_id: int
    user_email: str
    address: str
    user_agent: str
    client_info: Mapping[str, Any] | None = None

    def attributes(self) -> dict[str, Any]:
        """The worker as span attributes (core/tracing.py)."""
        return {
            "antenna_jobs.worker": client_name(self.client_info) or self.address,
            "antenna_jobs.worker_user": self.user_email or str(self.user_id),
            "user_agent.original": self.user_agent,
        }

    @property
    def key(self) -> str:
        """The worker: one user's client of one name (or address) and User-Agent."""
        named = client_name(self.client_info) or self.address
        return f"{self.user_id}|{named}|{self.user_agent}"[: 3 * MAX_TEXT]


@dataclass
class Calls:
    """What one API process served one worker of one job run since its last flush."""

    identity: Identity
    job_id: int
    run_id: str
    task_calls: int = 0
    tasks: int = 0
    result_calls: int = 0
    results: int = 0


class JobWorker(BaseModel):
    """One worker of a job's current run, as the readers show it."""

    job_id: int
    worker: str
    # How it is shown: its client_info name, its user's registered service name, or its address.
    name: str
    user_id: int
    user_email: str
    address: str
    user_agent: str
    service: str | None
    client_info: dict[str, Any] | None
    first_call: datetime
    last_call: datetime
    # Seconds since its last call (by the database's clock).
    idle: float
    tasks: int
    results: int
    # Results per second within the recent window (0 while it has posted none there).
    throughput: float
    idle_noted: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (user {self.user_email or self.user_id})"

    def brief(self) -> dict[str, Any]:
        """What the job detail and ``status --json`` list of it."""
        return {
            "name": self.name,
            "user": self.user_email,
            "service": self.service,
            "address": self.address,
            "user_agent": self.user_agent,
            "client_info": self.client_info,
            "first_call": self.first_call.isoformat(),
            "last_call": self.last_call.isoformat(),
            "idle_seconds": round(self.idle, 1),
            "tasks_fetched": self.tasks,
            "results_posted": self.results,
            "images_per_second": round(self.throughput, 3),
        }


def serving(workers: Iterable[JobWorker], within: float) -> list[JobWorker]:
    """The workers that called within ``within`` seconds."""
    return [w for w in workers if w.idle <= within]


def recent_rate(workers: Iterable[JobWorker], within: float) -> float:
    """Images per second of the workers serving the job now."""
    return sum(w.throughput for w in serving(workers, within))


def eta(remaining: int, rate: float) -> float | None:
    """Seconds until ``remaining`` images are done at ``rate`` (None: no rate)."""
    if remaining <= 0:
        return 0.0
    return remaining / rate if rate > 0 else None


def duration(seconds: float) -> str:
    """``42 s``, ``10 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def summary(workers: Iterable[JobWorker], within: float) -> str:
    """The process stage's param: each worker serving now, its rate and last call."""
    parts = [
        f"{w.label}: {w.throughput:.1f} img/s, last call {duration(w.idle)} ago"
        for w in serving(workers, within)
    ]
    return "; ".join(parts)
