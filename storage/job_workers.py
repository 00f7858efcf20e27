"""Which processing workers serve each job run, their last call and throughput, and the job's ETA
from the recent rate (tables ``job_workers`` and ``registered_services``).

A worker is the token's user plus the client's identity: the name its ``client_info`` gives
(``name``, ``hostname``, ``worker_id`` or ``host``) or else its address, and its User-Agent. It is
shown by that name, or the processing service name its user registered from that address (the
ADC sends no client_info), or its address. The API writes the calls it served in batches
(api/worker_tally.py); everything else reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel

# client_info keys that name the worker (the first one present, as a string, wins).
NAME_KEYS = ("name", "hostname", "worker_id", "host")
# Longest name, address or User-Agent kept (a client may send anything).
MAX_TEXT = 200
# A worker's recent throughput counts the results it posted within about this window.
RECENT_WINDOW_SECONDS = 300.0


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


_UPSERT = """
INSERT INTO job_workers AS w (job_id, run_id, worker, user_id, user_email, address, user_agent,
                              client_info, task_calls, tasks, result_calls, results,
                              recent_results)
SELECT j, ru, wk, us, em, ad, ua, ci, tc, t, rc, r, r
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
            %s::text[], %s::jsonb[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
     AS u(j, ru, wk, us, em, ad, ua, ci, tc, t, rc, r)
ON CONFLICT (job_id, run_id, worker) DO UPDATE SET
    last_call = now(),
    client_info = coalesce(EXCLUDED.client_info, w.client_info),
    task_calls = w.task_calls + EXCLUDED.task_calls,
    tasks = w.tasks + EXCLUDED.tasks,
    result_calls = w.result_calls + EXCLUDED.result_calls,
    results = w.results + EXCLUDED.results,
    recent_results = CASE WHEN w.last_call - w.recent_since > %s * interval '1 second'
        THEN EXCLUDED.results ELSE w.recent_results + EXCLUDED.results END,
    recent_since = CASE WHEN w.last_call - w.recent_since > %s * interval '1 second'
        THEN w.last_call ELSE w.recent_since END,
    idle_noted = false
RETURNING w.job_id, w.worker, (w.xmax = 0) AS inserted"""


async def record(conn: AsyncConnection[Any], calls: Iterable[Calls]) -> list[tuple[int, str]]:
    """Add the calls (one statement); the (job id, worker) pairs seen for the first time."""
    rows = list(calls)
    if not rows:
        return []
    cols: list[list[Any]] = [[] for _ in range(12)]
    for c in rows:
        i = c.identity
        values = (
            c.job_id,
            c.run_id,
            i.key,
            i.user_id,
            i.user_email[:MAX_TEXT],
            i.address[:MAX_TEXT],
            i.user_agent[:MAX_TEXT],
            Jsonb(dict(i.client_info)) if i.client_info else None,
            c.task_calls,
            c.tasks,
            c.result_calls,
            c.results,
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    cur = await conn.execute(_UPSERT, (*cols, RECENT_WINDOW_SECONDS, RECENT_WINDOW_SECONDS))
    return [(int(r["job_id"]), str(r["worker"])) for r in await cur.fetchall() if r["inserted"]]


async def registered(conn: AsyncConnection[Any], user_id: int, address: str, name: str) -> None:
    """A processing service registered its pipelines under this name, from this address."""
    await conn.execute(
        "INSERT INTO registered_services (user_id, address, name) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id, address) DO UPDATE SET name = EXCLUDED.name,"
        " registered_at = now()",
        (user_id, address[:MAX_TEXT], name[:MAX_TEXT]),
    )


async def service_name(conn: AsyncConnection[Any], user_id: int, address: str) -> str | None:
    """The processing service name the user registered (from this address, else the latest)."""
    cur = await conn.execute(
        "SELECT name FROM registered_services WHERE user_id = %s"
        " ORDER BY (address = %s) DESC, registered_at DESC LIMIT 1",
        (user_id, address),
    )
    row = await cur.fetchone()
    return str(row["name"]) if row else None


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


_READ = """
SELECT w.job_id, w.worker, w.user_id, w.user_email, w.address, w.user_agent, w.client_info,
       w.first_call, w.last_call, w.tasks, w.results, w.idle_noted,
       extract(epoch FROM now() - w.last_call)::float8 AS idle,
       w.recent_results::float8 / greatest(extract(epoch FROM w.last_call - w.recent_since),
                                           %s)::float8 AS throughput,
       (SELECT s.name FROM registered_services s WHERE s.user_id = w.user_id
        ORDER BY (s.address = w.address) DESC, s.registered_at DESC LIMIT 1) AS service
FROM job_workers w JOIN job_runs r ON r.job_id = w.job_id AND r.run_id = w.run_id
WHERE w.job_id = ANY(%s::bigint[])
ORDER BY w.job_id, w.first_call"""
# A throughput is never figured over less than this (a worker's first seconds would read high).
MIN_RATE_SECONDS = 10.0


async def of_jobs(conn: AsyncConnection[Any], job_ids: list[int]) -> dict[int, list[JobWorker]]:
    """The workers of each job's current run, oldest first."""
    if not job_ids:
        return {}
    cur = await conn.execute(_READ, (MIN_RATE_SECONDS, job_ids))
    found: dict[int, list[JobWorker]] = {}
    for row in await cur.fetchall():
        name = client_name(row["client_info"]) or row["service"] or row["address"] or "?"
        found.setdefault(int(row["job_id"]), []).append(JobWorker(**row, name=name))
    return found


async def note_idle(conn: AsyncConnection[Any], job_id: int, worker: str) -> bool:
    """Mark the worker's idleness as said; True if it was not (so it is said once)."""
    cur = await conn.execute(
        "UPDATE job_workers w SET idle_noted = true FROM job_runs r"
        " WHERE w.job_id = %s AND w.worker = %s AND r.job_id = w.job_id"
        " AND r.run_id = w.run_id AND NOT w.idle_noted",
        (job_id, worker),
    )
    return cur.rowcount == 1


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
