"""What the end-to-end benchmarks share: a database of their own, a Temporal dev server of their
own, worker and API subprocesses, Postgres transaction counts and peak RSS.

A database of its own (not a schema in the shared one) so that ``pg_stat_database`` counts only
this run's transactions while other work uses the same server.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from antenna_db.schema import ANTENNA  # noqa: E402
from cli.stack import processes  # noqa: E402
from core import search_attributes  # noqa: E402
from core.settings import DatabaseSettings, Settings, settings_env  # noqa: E402
from storage.migrate import migrate  # noqa: E402

LOGS = ROOT / ".state" / "logs"
BIN = Path(sys.executable).parent


def goal_line(name: str, measured: float, goal: float, unit: str, *, lower_is_better: bool) -> str:
    """``name: measured <unit> (goal < or > goal; ratio)``: the line `make bench` prints."""
    met = measured <= goal if lower_is_better else measured >= goal
    ratio = (goal / measured if lower_is_better else measured / goal) if measured else float("inf")
    sign = "<=" if lower_is_better else ">="
    verdict = "met" if met else "NOT met"
    return (
        f"{name}: {measured:.4g} {unit} (goal {sign} {goal:g} {unit}: {verdict},"
        f" {ratio:.2f}x the goal)"
    )


@asynccontextmanager
async def own_database(base: DatabaseSettings | None = None) -> AsyncIterator[DatabaseSettings]:
    """A fresh database with the standalone Antenna tables and ours, dropped at the end."""
    base = base or DatabaseSettings()
    name = f"aj_bench_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(base.url)
    async with await psycopg.AsyncConnection.connect(base.url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})
    db = base.model_copy(update={"url": url, "schema_name": "public"})
    try:
        await migrate(db, ANTENNA)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # Job ids name NATS streams and Redis keys shared with other runs: start far apart.
            sequence = "pg_get_serial_sequence('public.jobs_job', 'id')"
            await conn.execute(f"SELECT setval({sequence}, {random.randint(10**8, 10**12)})")
        yield db
    finally:
        async with await psycopg.AsyncConnection.connect(base.url, autocommit=True) as conn:
            with suppress(psycopg.Error):
                await conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@asynccontextmanager
async def own_temporal() -> AsyncIterator[str]:
    """A Temporal dev server (in memory) with our search attributes; its address."""
    port = processes.free_port()
    proc = processes.spawn(
        [
            str(BIN / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(port),
            "--log-level",
            "error",
            *search_attributes.dev_server_flags(),
        ],
        LOGS / f"bench-temporal-{port}.log",
        detach=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not processes.port_open("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the Temporal dev server did not start")
            await asyncio.sleep(0.2)  # waiting for the dev server to listen
        yield f"127.0.0.1:{port}"
    finally:
        processes.stop(proc.pid)


def bench_settings(db: DatabaseSettings, temporal_address: str, **groups: Any) -> Settings:
    """Settings on ``db`` and ``temporal_address`` with a task queue of the run's own; a group
    in ``groups`` (e.g. ``jobs={"heartbeat_interval": ...}``) updates those fields."""
    settings = Settings(database=db)
    updates: dict[str, Any] = {
        "temporal": settings.temporal.model_copy(update={"address": temporal_address}),
        "jobs": settings.jobs.model_copy(update={"task_queue": f"aj-bench-{uuid.uuid4().hex[:8]}"}),
    }
    for name, fields in groups.items():
        base = updates.get(name, getattr(settings, name))
        updates[name] = base.model_copy(update=fields)
    return settings.model_copy(update=updates)


def many_jobs_settings(db: DatabaseSettings, temporal_address: str, jobs: int) -> Settings:
    """bench_settings for ``jobs`` jobs running at once: a long-queue slot for each one's
    activity (two each, and some over), a pool of 20."""
    return bench_settings(
        db,
        temporal_address,
        worker={"long_queue_slots": max(2 * jobs + 10, 100)},
        database={"pool_max_size": 20},
    )


@dataclass
class Child:
    name: str
    proc: Any
    log: Path

    def peak_rss_mib(self) -> float:
        kib = processes.peak_rss_kib(self.proc.pid)
        return (kib or 0) / 1024


@dataclass
class Stack:
    """Worker and API subprocesses on one settings; stopped at the end."""

    settings: Settings
    children: list[Child] = field(default_factory=list)
    api_urls: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANTENNA_JOBS_")}
        return {**base, "PYTHONUNBUFFERED": "1", **settings_env(self.settings), **extra}

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log = LOGS / f"bench-{self.settings.jobs.task_queue}-{name}.log"
        proc = processes.spawn(
            [sys.executable, "-m", "cli", *args], log, env=self.env(**(env or {}))
        )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def worker(self, n: int = 1) -> None:
        self.spawn(f"worker{n}", "worker")

    async def api(self, n: int = 1, *, workers: int = 1) -> str:
        port = processes.free_port()
        args = ["api", "--port", str(port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        self.spawn(f"api{n}", *args)
        url = f"http://127.0.0.1:{port}"
        await self.wait_http(f"{url}/healthz")
        self.api_urls.append(url)
        return url

    def fake_workers(
        self, n: int, api_url: str, token: str, *, concurrency: int = 4, poll: float = 0.5
    ) -> list[Child]:
        """``n`` fake ADC workers as processes of their own (building results is CPU work that
        would otherwise compete with the benchmark's own measuring)."""
        return [
            self.spawn(
                f"fake{i}",
                "fake-worker",
                "--api-url",
                api_url,
                "--concurrency",
                str(concurrency),
                "--poll-interval",
                str(poll),
                "--seed",
                str(i),
                env={"ANTENNA_JOBS_API_TOKEN": token},
            )
            for i in range(n)
        ]

    async def wait_http(self, url: str, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                self.check()
                with suppress(httpx.TransportError):
                    if (await http.get(url)).status_code < 500:
                        return
                await asyncio.sleep(0.2)  # waiting for the subprocess to listen
        raise RuntimeError(f"{url} did not answer within {within:.0f} s")

    def check(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited ({child.proc.returncode}):"
                    f" {processes.log_tail(child.log)}"
                )

    def stop_child(self, child: Child) -> None:
        self.children.remove(child)
        processes.stop(child.proc.pid)

    def stop(self) -> None:
        for child in reversed(self.children):
            processes.stop(child.proc.pid)


@dataclass
class Clients:
    """What a benchmark drives the system with, on one settings."""

    settings: Settings
    pool: Any
    temporal: Any
    nc: Any
    token: str

    def actions(self) -> Any:
        from job_control.actions import JobActions

        return JobActions(self.pool, self.temporal, self.settings)


@asynccontextmanager
async def connected(settings: Settings, user: str) -> AsyncIterator[Clients]:
    """A pool, a Temporal client and a NATS connection on ``settings``, and the API token of a
    new superuser ``user``; closed at the end."""
    import nats

    from antenna_db import users
    from core.temporal_client import connect_temporal
    from storage.pool import open_pool

    pool = await open_pool(settings.database)
    try:
        temporal = await connect_temporal(settings.temporal)
        nc = await nats.connect(settings.nats.url)
        try:
            async with pool.connection() as conn:
                token = await users.create_token_user(conn, user, superuser=True)
            yield Clients(settings, pool, temporal, nc, token)
        finally:
            await nc.drain()
    finally:
        await pool.close()


async def published(nc: Any, names: Any, counts: dict[int, int]) -> bool:
    """Whether each job's stream (job id -> messages) holds at least that many messages."""
    js = nc.jetstream()
    for job_id, count in counts.items():
        try:
            info = await js.stream_info(names.stream(job_id))
        except Exception:
            return False
        if info.state.messages < count:
            return False
    return True


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    running = Stack(settings)
    try:
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def profiled(pid: int, out: Path | None, rate: int = 200) -> AsyncIterator[None]:
    """py-spy (when installed and ``out`` given) sampling ``pid`` while the block runs, written
    as collapsed stacks (``py-spy record --format raw``) to ``out``."""
    spy = BIN / "py-spy"
    if out is None or not spy.exists():
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaching
    try:
        yield
    finally:
        proc.send_signal(2)
        await proc.wait()


def top_frames(collapsed: Path, n: int = 25) -> list[str]:
    """The functions where most samples were, self time and total, from collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack_text.split(";")
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    ours = ("api/", "activities/", "core/", "antenna_db/", "job_control/")
    by_self = sorted(own.items(), key=lambda kv: -kv[1])[:n]
    by_total = sorted(
        ((f, t) for f, t in total.items() if any(f"({o}" in f for o in ours)),
        key=lambda kv: -kv[1],
    )[:n]
    lines = [f"{samples} samples; by self time:"]
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in by_self]
    lines.append("our code by total time:")
    lines += [f"  {100 * t / samples:5.1f}%  {f}" for f, t in by_total]
    return lines


async def transactions(conn: psycopg.AsyncConnection[Any]) -> int:
    """Transactions committed or rolled back in this database so far (statistics are flushed
    by each backend at most once a second, so measure over windows of several seconds)."""
    cur = await conn.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname ="
        " current_database()"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0] if isinstance(row, tuple) else next(iter(row.values())))


async def until(check: Any, within: float, what: str, every: float = 0.5) -> float:
    """Wait for ``await check()`` to be true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise RuntimeError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(every)  # a benchmark's own progress check, not the system's
    return time.monotonic() - started


async def statuses(conn: psycopg.AsyncConnection[Any], job_ids: list[int]) -> dict[str, int]:
    """How many of ``job_ids`` are in each status."""
    cur = await conn.execute(
        "SELECT status, count(*) AS n FROM jobs_job WHERE id = ANY(%s) GROUP BY status",
        (job_ids,),
    )
    return {r["status"]: int(r["n"]) for r in await cur.fetchall()}
