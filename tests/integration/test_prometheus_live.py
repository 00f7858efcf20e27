"""A real Prometheus server scraping a real ``antenna-jobs api`` and ``antenna-jobs worker`` while
a job runs (issue 19, item 3): every dashboard query and every rule expression evaluates through
Prometheus' HTTP API without error, the rule groups evaluate cleanly and nothing fires on a
healthy system, and the main series hold what the database and NATS hold.

Prometheus is the binary of Debian's ``prometheus`` package (.ci/run installs it; its service is
never started), on a free loopback port with a config and data dir in the test's tmp dir, loading
deploy/prometheus/rules.yml as the compose stack does.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from antenna_db import users
from cli.stack import processes
from core.settings import Settings
from job_control.actions import JobActions
from storage import job_runs
from tests.helpers import eventually
from tests.helpers.db import run_counters
from tests.helpers.jobs import entry, error_result, make_job, success_result
from tests.helpers.processes import Proc, child_env, wait_port, worker_processes

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/antenna-jobs.json"
IMAGES = 12
TASKS_ROUTE = "/api/v2/jobs/{job_id}/tasks/"
RESULT_ROUTE = "/api/v2/jobs/{job_id}/result/"
METRIC_NAME = re.compile(r"\b(antenna_jobs_[a-z_]+|temporal_[a-z_]+|up)\b")
# Series the dashboard and rules use that this test cannot make: the bridge's and the schema
# check's (other processes), and workflow task failures (none happen here). Every other name
# must exist in Prometheus, so a misspelt name (or the SDK's other naming) fails here.
NOT_MADE_HERE = {
    "antenna_jobs_bridge_connected",
    "antenna_jobs_bridge_queue_depth",
    "antenna_jobs_bridge_foreign_consumers",
    "antenna_jobs_bridge_dead_lettered",
    "antenna_jobs_schema_problems",
    "antenna_jobs_schema_refusals_total",
    "temporal_workflow_task_execution_failed_total",
}


def prometheus_config(api_port: int, worker_port: int, token_file: Path) -> str:
    return json.dumps(  # JSON is YAML
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "antenna-jobs-api",
                    "authorization": {"type": "Token", "credentials_file": str(token_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                },
                {
                    "job_name": "antenna-jobs-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                },
            ],
        }
    )


class PromApi:
    def __init__(self, port: int) -> None:
        self.port = port
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)

    async def ready(self) -> bool:
        """Prometheus listens before it is ready; until then its API answers 503 in plain text."""
        try:
            answer = await self.http.get(f"http://127.0.0.1:{self.port}/-/ready")
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.http.get(path, params=params)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    async def value(self, expr: str) -> float | None:
        """The value of a query answering one series (None if it answers none)."""
        result = await self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    async def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in await self.query(expr)}


def dashboard_queries(job_id: int) -> list[tuple[str, str, bool]]:
    """(panel title, expression as Grafana sends it, instant?) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$job_id", str(job_id))
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
            )
            assert "$" not in expr, (panel["title"], expr)
            out.append((panel["title"], expr, bool(target.get("instant"))))
    return out


def rule_expressions() -> list[tuple[str, str]]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]


async def db_counts(pool: Any) -> dict[str, float]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status, count(*)::int AS n FROM jobs_job GROUP BY status")
        return {r["status"]: float(r["n"]) for r in await cur.fetchall()}


async def scalar(pool: Any, sql: str, *args: Any) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
        return None if row is None else next(iter(row.values()))


@pytest.mark.timeout(300)
async def test_a_real_prometheus_scrapes_api_and_worker_while_a_job_runs(
    settings: Settings, pool: Any, temporal_client: Any, nats_client: Any, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: apt-get install prometheus (.ci/run does)"
    made = await make_job(pool, images=IMAGES)
    job, slug = made.job, made.seeded.pipeline_slug
    async with pool.connection() as conn:
        key = await users.create_token_user(conn, "prometheus test worker", superuser=True)
    secret = f"scrape-{uuid.uuid4().hex}"
    token_file = tmp_path / "metrics_token"
    token_file.write_text(secret)
    api_port, worker_port, prom_port = (processes.free_port() for _ in range(3))
    sdk_bind = f"127.0.0.1:{processes.free_port()}"
    (tmp_path / "prometheus.yml").write_text(prometheus_config(api_port, worker_port, token_file))
    api = Proc(
        "api",
        [sys.executable, "-m", "cli", "api", "--port", str(api_port)],
        tmp_path / "api.log",
        child_env(settings, ANTENNA_JOBS_API_METRICS_TOKEN=secret),
    )
    prometheus = Proc(
        "prometheus",
        [
            binary, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
        {"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    actions = JobActions(pool, temporal_client, settings)
    prom = PromApi(prom_port)
    with worker_processes(
        settings,
        tmp_path,
        ANTENNA_JOBS_WORKER_METRICS_PORT=str(worker_port),
        ANTENNA_JOBS_WORKER_METRICS_BIND=sdk_bind,
    ) as workers:
        worker = workers.start()
        api.start()
        try:
            await wait_port(api_port, proc=api)
            await wait_port(worker_port, proc=worker)
            prometheus.start()
            await wait_port(prom_port, proc=prometheus)
            await eventually(prom.ready, within=60, interval=0.2)

            async def targets_up() -> bool:
                active = (await prom.get("/targets"))["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            await eventually(targets_up, within=60, interval=0.5)

            # The job runs: published, 8 tasks fetched over HTTP, 6 answered (one an error).
            await actions.run(job.id)

            async def published() -> bool:
                async with pool.connection() as conn:
                    run = await job_runs.get(conn, job.id)
                if run is None or not run.consumer:
                    return False
                js = nats_client.jetstream()
                try:
                    info = await js.consumer_info(settings.jobs.names.stream(job.id), run.consumer)
                except Exception:
                    return False
                return int(info.num_pending or 0) == IMAGES

            await eventually(published, within=120, interval=0.3)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}/api/v2",
                headers={"Authorization": f"Token {key}"},
                timeout=30,
            ) as client:
                fetched = await client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 8})
                assert fetched.status_code == 200, fetched.text
                tasks = fetched.json()["tasks"]
                assert len(tasks) == 8
                results = [entry(t, success_result(t, pipeline=slug)) for t in tasks[:5]]
                results.append(entry(tasks[5], error_result(tasks[5])))
                posted = await client.post(f"/jobs/{job.id}/result/", json={"results": results})
                assert posted.status_code == 200, posted.text

            async def saved() -> bool:
                return await run_counters(pool, job.id) == (5, 1)

            await eventually(saved, within=60, interval=0.3)
            await check_the_series(prom, pool, nats_client, settings, job, slug)
            await check_every_query_and_rule(prom, job.id)
        finally:
            await prom.http.aclose()
            prometheus.stop()
            if api.running():
                await actions.cancel(job.id, reason="test over")
            api.stop()
        for proc in (api, prometheus):
            assert "Traceback" not in proc.log.read_text(), proc.tail(60)


async def check_the_series(
    prom: PromApi, pool: Any, nats_client: Any, settings: Settings, job: Any, slug: str
) -> None:
    """Prometheus' latest values are the database's and NATS's (once a scrape after the save
    has landed: scraped every second, the overview cached up to 5 s)."""
    job_sel = f'job_id="{job.id}"'
    async with pool.connection() as conn:
        run = await job_runs.get(conn, job.id)
    assert run is not None
    info = await nats_client.jetstream().consumer_info(
        settings.jobs.names.stream(job.id), run.consumer
    )
    assert (info.num_pending, info.num_ack_pending) == (IMAGES - 8, 2)
    polled = await scalar(
        pool, "SELECT polled_at FROM pipeline_polls WHERE pipeline_id = %s", job.pipeline_id
    )
    expected = {
        f'max(antenna_jobs_job_images{{{job_sel}, state="total"}})': float(IMAGES),
        f'max(antenna_jobs_job_images{{{job_sel}, state="processed"}})': 5.0,
        f'max(antenna_jobs_job_images{{{job_sel}, state="failed"}})': 1.0,
        f"max(antenna_jobs_job_tasks_queued{{{job_sel}}})": float(info.num_pending),
        f"max(antenna_jobs_job_tasks_in_flight{{{job_sel}}})": float(info.num_ack_pending),
        f"max(antenna_jobs_job_tasks_redelivered{{{job_sel}}})": float(info.num_redelivered),
        f"max(antenna_jobs_job_inbox_rows{{{job_sel}}})": 0.0,
        f"max(antenna_jobs_job_waiting_for_workers{{{job_sel}}})": 0.0,
        "max(antenna_jobs_result_inbox_rows)": float(
            await scalar(pool, "SELECT count(*) FROM result_inbox")
        ),
        f'max(antenna_jobs_pipeline_last_poll_timestamp_seconds{{pipeline="{slug}"}})': round(
            polled.timestamp(), 3
        ),
        # The worker process is this test's own: its savers saved exactly this job's outcomes.
        'sum(antenna_jobs_results_saved_total{outcome="processed"})': 5.0,
        'sum(antenna_jobs_results_saved_total{outcome="failed"})': 1.0,
        "sum(antenna_jobs_results_received_total)": 6.0,
        f'sum(antenna_jobs_api_request_seconds_count{{route="{TASKS_ROUTE}", status="200"}})': 1.0,
        f'sum(antenna_jobs_api_request_seconds_count{{route="{RESULT_ROUTE}", status="200"}})': 1.0,
        'count(up{job=~"antenna-jobs.*"} == 1)': 2.0,
    }

    # Scraped a few times while it runs, so range functions (deriv, rate) have samples to use.
    history = f"min(count_over_time(antenna_jobs_job_images{{{job_sel}}}[5m]))"

    async def matches() -> bool:
        if ((await prom.value(history)) or 0) < 5:
            return False
        got = {expr: await prom.value(expr) for expr in expected}
        statuses = await prom.by("max by (status) (antenna_jobs_jobs)", "status")
        db = await db_counts(pool)
        wrong = {
            e: (g, expected[e]) for e, g in got.items() if g is None or round(g, 3) != expected[e]
        }
        if wrong or {s: v for s, v in statuses.items() if v} != db:
            matches.last = (wrong, statuses, db)  # type: ignore[attr-defined]
            return False
        return True

    try:
        await eventually(matches, within=45, interval=0.5)
    except AssertionError:
        raise AssertionError(f"series differ (got, expected): {matches.last}") from None  # type: ignore[attr-defined]

    # The Temporal SDK's series, named as core/temporal_client.py says, on the worker's target.
    worker_target = 'job="antenna-jobs-worker"'
    for expr in (
        f'sum(temporal_worker_task_slots_available{{service="antenna-jobs", {worker_target}}})',
        'sum(temporal_workflow_task_schedule_to_start_latency_seconds_count{service="antenna-jobs"})',
        'sum(temporal_activity_schedule_to_start_latency_seconds_count{service="antenna-jobs"})',
        'sum(temporal_request_total{service="antenna-jobs"})',
    ):
        value = await prom.value(expr)
        assert value is not None and value > 0, expr


async def check_every_query_and_rule(prom: PromApi, job_id: int) -> None:
    names = set(await prom.get("/label/__name__/values"))
    now = time.time()
    for title, expr, instant in dashboard_queries(job_id):
        if instant:
            result = await prom.query(expr)
        else:
            data = await prom.get("/query_range", query=expr, start=now - 120, end=now, step=2)
            result = data["result"]
        used = set(METRIC_NAME.findall(expr))
        assert used - names <= NOT_MADE_HERE, f"{title}: no series {used - names - NOT_MADE_HERE}"
        # A query on series that exist answers something (ETA drops jobs saving nothing now).
        if used <= names and "> 0)" not in expr:
            assert result, f"{title}: no data for {expr}"
    for name, expr in rule_expressions():
        await prom.query(expr)  # no error
        used = set(METRIC_NAME.findall(expr))
        assert used - names <= NOT_MADE_HERE, f"{name}: no series {used - names - NOT_MADE_HERE}"
    # Prometheus evaluated every group itself without error, and nothing fires while all is well.
    for group in (await prom.get("/rules"))["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # (Bridge reports are the session's: other tests' queues hold dead letters on purpose.)
    firing = await prom.query('ALERTS{alertstate="firing", queue!~"aj-test-bridge-.*"}')
    assert not firing, firing
