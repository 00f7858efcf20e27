"""The workers' calls per job run and the service names their users registered (tables
``job_workers`` and ``registered_services``): written in batches by the API
(api/worker_tally.py), read with a job. Who a worker is and how its rate reads:
core/worker_calls.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.worker_calls import (
    MAX_TEXT,
    MIN_RATE_SECONDS,
    RECENT_WINDOW_SECONDS,
    Calls,
    JobWorker,
    client_name,
)

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
