"""A result post as big as the real ones: the API's peak memory, its answer time, and how long
other workers' ``/tasks/`` calls wait meanwhile.

The 29,176-class moths model posts 110-150 MB per batch of 24 images: 5 detections an image, each
classification with full ``scores`` and ``logits`` arrays. This script starts the API as a
subprocess (``python -m cli api``) against the local PostgreSQL, NATS and a Temporal dev server it
starts itself, makes two STARTED async jobs (one whose 24 tasks the big body answers, one that a
poller asks for a task every 20 ms), posts the body and prints, per body size:

- the API's peak RSS (VmHWM of /proc/<pid>/status) against the body size,
- the time from sending the body to the answer,
- p50/p99/max of the ``/tasks/`` calls started every 20 ms while the post was in flight.

    .venv/bin/python benchmarks/big_result_post.py --size-mb 64 142
    .venv/bin/python benchmarks/big_result_post.py --api-root /tmp/base   # another checkout's API
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.helpers_* when run as a script

import httpx  # noqa: E402
import nats  # noqa: E402
import psycopg  # noqa: E402

from antenna_db.seed import CLASSIFIER_KEY, DETECTOR_KEY  # noqa: E402
from api.tokens import create_token  # noqa: E402
from cli.stack import processes  # noqa: E402
from core.db import migrate, open_pool  # noqa: E402
from core.settings import DatabaseSettings, JobSettings, NatsSettings, Settings  # noqa: E402
from tests.helpers_api import Streams, inbox_rows, make_job  # noqa: E402
from tests.helpers_processes import child_env  # noqa: E402

CLASSES = 29_176
IMAGES = 24
DETECTIONS = 5
POLL_INTERVAL = 0.02


def _floats(rng: random.Random, digits: int, logits: bool) -> str:
    values = (rng.gauss(0.0, 3.0) if logits else rng.random() / CLASSES for _ in range(CLASSES))
    return "[" + ",".join(format(v, f".{digits}g") for v in values) + "]"


def _arrays(digits: int) -> list[tuple[str, str]]:
    rng = random.Random(digits)
    return [(_floats(rng, digits, False), _floats(rng, digits, True)) for _ in range(DETECTIONS)]


def _entry(task: dict[str, Any], arrays: list[tuple[str, str]], now: str) -> str:
    """One image's result, as the ADC posts it, with the big arrays spliced in as text."""
    image = task["image_id"]
    detections = []
    for i, (scores, logits) in enumerate(arrays):
        classification = json.dumps(
            {
                "classification": "Noctua pronuba",
                "labels": None,
                "scores": "@S",
                "logits": "@L",
                "inference_time": 0.4,
                "algorithm": {"name": "Moths 2024", "key": CLASSIFIER_KEY},
                "terminal": True,
                "timestamp": now,
            }
        )
        classification = classification.replace('"@S"', scores).replace('"@L"', logits)
        detection = json.dumps(
            {
                "source_image_id": image,
                "bbox": {"x1": 10.0 * i, "y1": 5.0, "x2": 10.0 * i + 80.5, "y2": 90.25},
                "inference_time": 0.05,
                "algorithm": {"name": "Detector", "key": DETECTOR_KEY},
                "timestamp": now,
                "crop_image_url": None,
                "classifications": "@C",
            }
        )
        detections.append(detection.replace('"@C"', f"[{classification}]"))
    result = json.dumps(
        {
            "pipeline": "moths",
            "algorithms": {},
            "total_time": 1.5,
            "source_images": [{"id": image, "url": task["image_url"]}],
            "detections": "@D",
        }
    ).replace('"@D"', "[" + ",".join(detections) + "]")
    return f'{{"reply_subject": {json.dumps(task["reply_subject"])}, "result": {result}}}'


def build_body(tasks: list[dict[str, Any]], size_mb: float) -> bytes:
    """The body, its floats printed with as many digits as bring it nearest ``size_mb``."""
    now = datetime.now(UTC).isoformat()
    best: bytes | None = None
    for digits in (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17):
        arrays = _arrays(digits)
        body = ('{"results": [' + ",".join(_entry(t, arrays, now) for t in tasks) + "]}").encode()
        if best is None or abs(len(body) - size_mb * 1e6) < abs(len(best) - size_mb * 1e6):
            best = body
        if len(body) >= size_mb * 1e6:
            break
    assert best is not None
    return best


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@dataclass
class Figures:
    body_bytes: int
    status: int
    answer_seconds: float
    rss_before: int
    peak_rss: int
    tasks_latencies: list[float]
    stored: int

    def line(self) -> str:
        mb = 1e6
        lat = sorted(self.tasks_latencies) or [float("nan")]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"body {self.body_bytes / mb:.1f} MB -> HTTP {self.status} in"
            f" {self.answer_seconds:.2f} s, {self.stored} inbox rows;"
            f" API RSS before {self.rss_before / mb:.0f} MB, peak {self.peak_rss / mb:.0f} MB"
            f" (peak growth {(self.peak_rss - self.rss_before) / self.body_bytes:.2f}x body,"
            f" peak {self.peak_rss / self.body_bytes:.2f}x body);"
            f" concurrent /tasks/ n={len(self.tasks_latencies)}"
            f" p50 {statistics.median(lat) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
            f" max {lat[-1] * 1000:.0f} ms"
        )


async def _poll_tasks(
    http: httpx.AsyncClient, job_id: int, stop: asyncio.Event, out: list[float]
) -> None:
    """Open loop: a new call every POLL_INTERVAL whether or not the last one answered, so a
    stalled API shows as many slow calls (not one), as it does to several polling workers."""

    async def one() -> None:
        started = time.perf_counter()
        response = await http.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 1})
        response.raise_for_status()
        out.append(time.perf_counter() - started)

    calls = []
    while not stop.is_set():
        calls.append(asyncio.create_task(one()))
        await asyncio.sleep(POLL_INTERVAL)
    await asyncio.gather(*calls)


async def one_size(
    settings: Settings, pool: Any, streams: Streams, api_root: Path, size_mb: float, log: Path
) -> Figures:
    port = processes.free_port()
    env = child_env(settings, PYTHONPATH=str(api_root))
    proc = processes.spawn(
        [sys.executable, "-P", "-m", "cli", "api", "--port", str(port)], log, env=env, detach=True
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v2"
        async with pool.connection() as conn:
            key = await create_token(conn, "big-result-benchmark")
        headers = {"Authorization": f"Token {key}"}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as poster,
            httpx.AsyncClient(
                base_url=base,
                headers=headers,
                timeout=300,
                limits=httpx.Limits(max_connections=2000, max_keepalive_connections=50),
            ) as poller,
        ):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await poster.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"API did not start: {processes.log_tail(log)}")
                await asyncio.sleep(0.2)  # waiting for the subprocess to listen

            big = await make_job(pool, images=IMAGES)
            await streams.publish(big.id, big.images)
            polled = await make_job(pool, images=8000)
            await streams.publish(polled.id, polled.images)
            response = await poster.post(f"/jobs/{big.id}/tasks/", json={"batch_size": IMAGES})
            tasks = response.json()["tasks"]
            assert len(tasks) == IMAGES, response.text
            body = build_body(tasks, size_mb)
            # Warm up both paths (imports, pools, the task fetcher's subscription).
            await poller.post(f"/jobs/{polled.id}/tasks/", json={"batch_size": 1})
            await poster.post(f"/jobs/{big.id}/result/", json={"results": []})

            rss_before = _status(proc.pid, "VmRSS")
            stop = asyncio.Event()
            latencies: list[float] = []
            polling = asyncio.create_task(_poll_tasks(poller, polled.id, stop, latencies))
            started = time.perf_counter()
            response = await poster.post(
                f"/jobs/{big.id}/result/",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            answer = time.perf_counter() - started
            stop.set()
            await polling
            peak = _status(proc.pid, "VmHWM")
            stored = len(await inbox_rows(pool, big.id))
            return Figures(
                len(body), response.status_code, answer, rss_before, peak, latencies, stored
            )
    finally:
        processes.stop(proc.pid)


async def main(sizes: list[float], api_root: Path) -> None:
    schema = f"aj_bench_{uuid.uuid4().hex[:8]}"
    logs = ROOT / ".state" / "logs"
    log = logs / f"big-result-api-{schema}.log"
    # A Temporal dev server of our own (the API connects to one at start); a subprocess, so this
    # process loads no Temporal runtime.
    temporal_port = processes.free_port()
    temporal = processes.spawn(
        [
            str(Path(sys.executable).parent / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(temporal_port),
            "--log-level",
            "error",
        ],
        logs / f"big-result-temporal-{schema}.log",
        detach=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not processes.port_open("127.0.0.1", temporal_port):
            if time.monotonic() > deadline:
                raise RuntimeError("the Temporal dev server did not start")
            await asyncio.sleep(0.2)  # waiting for the dev server to listen
        await _run(sizes, api_root, schema, log, f"127.0.0.1:{temporal_port}")
    finally:
        processes.stop(temporal.pid)


async def _run(sizes: list[float], api_root: Path, schema: str, log: Path, address: str) -> None:
    settings = Settings(
        database=DatabaseSettings(schema_name=schema),
        jobs=JobSettings(task_queue=f"aj-bench-{uuid.uuid4().hex[:8]}"),
        # The poller never acks what it fetches: let it hold that many tasks.
        nats=NatsSettings(max_ack_pending=100_000),
    )
    settings = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"address": address})}
    )
    await migrate(settings.database)
    url = settings.database.url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        offset = random.randint(10**8, 10**12)
        await conn.execute(f"ALTER SEQUENCE {schema}.jobs_id_seq RESTART WITH {offset}")
    pool = await open_pool(settings.database)
    nc = await nats.connect(settings.nats.url)
    streams = Streams(js=nc.jetstream(), settings=settings)
    try:
        print(f"API from {api_root} (python {sys.version.split()[0]}, pid per size)")
        for size in sizes:
            figures = await one_size(settings, pool, streams, api_root, size, log)
            print(figures.line(), flush=True)
    finally:
        for job_id in streams.created:
            await streams.delete(job_id)
        await nc.drain()
        await pool.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, nargs="+", default=[64.0, 142.0])
    parser.add_argument(
        "--api-root", type=Path, default=ROOT, help="checkout whose API is started (default: this)"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(args.size_mb, args.api_root.resolve()))
