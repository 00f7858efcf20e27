"""Prometheus exposition of antenna-jobs' figures, for the API's ``/metrics`` route and the
worker's metrics server.

Both serve the process's own counters (core/metrics.py, with prometheus-client's process and
Python collectors) and the system overview read on scrape (job_control/overview.py, cached for a
few seconds). The worker's server adds the Temporal SDK's metrics: the SDK serves them on an
endpoint of its own (``TelemetryConfig(metrics=PrometheusConfig(...))``), which this module
reads and re-exposes, so one scrape target has everything.

Reading it over HTTP is the only way in: a Runtime takes one metrics sink (temporalio 1.35:
``TelemetryConfig.metrics`` is a PrometheusConfig, an OpenTelemetryConfig or a MetricBuffer).
A MetricBuffer instead would close the SDK's own endpoint (``METRICS_BIND``, which the README
offers and tests/workflows/test_workflow_worker_process.py reads) and hand us raw updates, so
that we would redo what the SDK's exporter does: sums, the histograms' buckets (which the alert
rules' quantiles read), the ``_total`` and ``_seconds`` names and the service label. Having
Prometheus scrape the SDK's endpoint directly would take the ``temporal_`` series off the
worker's and the API's ``/metrics``, one target each (tests/integration/test_metrics.py,
test_prometheus_live.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from core.metrics import job_eta_family, job_worker_families
from core.states import JobState
from job_control.overview import Overview, OverviewSource, RunningJob

log = logging.getLogger(__name__)

# How long a scrape waits for the overview (database and NATS) before answering without it.
OVERVIEW_TIMEOUT = 10.0
TEMPORAL_TIMEOUT = 2.0
_JOB_LABELS = ["job_id", "project_id", "pipeline"]


def _job_labels(job: RunningJob) -> list[str]:
    pipeline = job.pipeline_slug or ("" if job.pipeline_id is None else f"id:{job.pipeline_id}")
    return [str(job.id), str(job.project_id), pipeline]


def overview_metrics(overview: Overview) -> list[Metric]:
    """The overview as metric families (names listed in the README)."""
    jobs = GaugeMetricFamily("antenna_jobs_jobs", "Jobs by status (jobs_job)", labels=["status"])
    for state in JobState:
        jobs.add_metric([state.value], overview.jobs_by_status.get(state.value, 0))
    queued = GaugeMetricFamily(
        "antenna_jobs_job_tasks_queued",
        "Per running async job: tasks published and not yet delivered (NATS num_pending)",
        labels=_JOB_LABELS,
    )
    in_flight = GaugeMetricFamily(
        "antenna_jobs_job_tasks_in_flight",
        "Per running async job: tasks delivered and not yet acked (NATS num_ack_pending)",
        labels=_JOB_LABELS,
    )
    redelivered = GaugeMetricFamily(
        "antenna_jobs_job_tasks_redelivered",
        "Per running async job: tasks delivered more than once (NATS num_redelivered)",
        labels=_JOB_LABELS,
    )
    images = GaugeMetricFamily(
        "antenna_jobs_job_images",
        "Per running job: images of the current run (total, processed, failed)",
        labels=[*_JOB_LABELS, "state"],
    )
    job_inbox = GaugeMetricFamily(
        "antenna_jobs_job_inbox_rows",
        "Per running job: results posted and not yet saved",
        labels=_JOB_LABELS,
    )
    job_waiting = GaugeMetricFamily(
        "antenna_jobs_job_waiting_for_workers",
        "Per running async job: 1 while no processing worker polled its pipeline within the window",
        labels=_JOB_LABELS,
    )
    waiting = 0
    blocked = GaugeMetricFamily(
        "antenna_jobs_job_schema_blocked_seconds",
        "Per running job whose saves wait for Antenna's schema (a save refused for a schema"
        " reason): how long they have waited",
        labels=_JOB_LABELS,
    )
    for job in overview.running:
        labels = _job_labels(job)
        if job.queue is not None:
            queued.add_metric(labels, job.queue.queued)
            in_flight.add_metric(labels, job.queue.in_flight)
            redelivered.add_metric(labels, job.queue.redelivered)
            job_waiting.add_metric(labels, int(job.waiting_for_workers))
        for kind, value in (
            ("total", job.total),
            ("processed", job.processed),
            ("failed", job.failed),
        ):
            images.add_metric([*labels, kind], value)
        job_inbox.add_metric(labels, job.inbox)
        waiting += job.waiting_for_workers
        if job.schema_error is not None:
            blocked.add_metric(labels, job.schema_error_age or 0.0)
    polls = GaugeMetricFamily(
        "antenna_jobs_pipeline_last_poll_timestamp_seconds",
        "Per pipeline: when a processing worker last asked for tasks (POST /tasks/), Unix time",
        labels=["pipeline"],
    )
    for poll in overview.polls:
        polls.add_metric([poll.slug or f"id:{poll.pipeline_id}"], poll.polled_at.timestamp())
    return [
        *_bridge_metrics(overview),
        *_worker_metrics(overview),
        jobs,
        queued,
        in_flight,
        redelivered,
        images,
        job_inbox,
        blocked,
        GaugeMetricFamily(
            "antenna_jobs_jobs_schema_blocked",
            "Running jobs whose saves wait for Antenna's schema (results kept in the inbox)",
            value=sum(job.schema_error is not None for job in overview.running),
        ),
        job_waiting,
        GaugeMetricFamily(
            "antenna_jobs_jobs_waiting_for_workers",
            "Running async jobs whose pipeline no processing worker polled within the window",
            value=waiting,
        ),
        GaugeMetricFamily(
            "antenna_jobs_result_inbox_rows",
            "Results posted and not yet saved, all jobs (result_inbox rows)",
            value=overview.inbox_depth,
        ),
        GaugeMetricFamily(
            "antenna_jobs_result_inbox_oldest_age_seconds",
            "Age of the oldest unsaved result row (0 when the inbox is empty)",
            value=overview.inbox_oldest_age or 0.0,
        ),
        polls,
    ]


def _bridge_metrics(overview: Overview) -> list[Metric]:
    """Per jobs queue a bridge consumes: its last report (bridge_reports)."""
    families = {
        "connected": GaugeMetricFamily(
            "antenna_jobs_bridge_connected",
            "1 if the bridge's last report (not stale) says it consumes the jobs queue",
            labels=["queue"],
        ),
        "age": GaugeMetricFamily(
            "antenna_jobs_bridge_report_age_seconds",
            "Seconds since the bridge last reported (it reports every few seconds)",
            labels=["queue"],
        ),
        "depth": GaugeMetricFamily(
            "antenna_jobs_bridge_queue_depth",
            "run_job messages waiting in Antenna's jobs queue",
            labels=["queue"],
        ),
        "foreign": GaugeMetricFamily(
            "antenna_jobs_bridge_foreign_consumers",
            "Consumers of the jobs queue other than the bridge (they take Runs: stop them)",
            labels=["queue"],
        ),
        "dead": GaugeMetricFamily(
            "antenna_jobs_bridge_dead_lettered",
            "run_job messages the bridge gave up on, kept in its dead-letter queue",
            labels=["queue"],
        ),
    }
    for b in overview.bridges:
        labels = [b.queue]
        families["connected"].add_metric(labels, 1 if b.connected and not b.stale else 0)
        families["age"].add_metric(labels, b.age)
        for key, value in (
            ("depth", b.queue_depth),
            ("foreign", b.foreign_consumers),
            ("dead", b.dead_lettered),
        ):
            if value is not None:
                families[key].add_metric(labels, value)
    return list(families.values())


def _worker_metrics(overview: Overview) -> list[Metric]:
    """Who serves each running job, and its ETA (core/metrics.py names them)."""
    workers = [
        (
            _job_labels(job),
            worker.name,
            worker.user_email or str(worker.user_id),
            worker.last_call.timestamp(),
            worker.throughput,
            float(worker.results),
        )
        for job in overview.running
        for worker in job.workers
    ]
    etas = [(_job_labels(job), job.eta) for job in overview.running if job.eta is not None]
    return [
        *job_worker_families(workers),
        job_eta_family((labels, eta) for labels, eta in etas if eta is not None),
    ]


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(overview: Overview | None, *, temporal_bind: str | None = None) -> bytes:
    """The process's counters, the overview's figures (if any) and the Temporal SDK's (when its
    endpoint is given), in the text format. Blocks while it reads the SDK's endpoint."""
    own = CollectorRegistry(auto_describe=False)
    own.register(_Fixed(overview_metrics(overview) if overview is not None else []))
    if temporal_bind is not None:
        own.register(_TemporalMetrics(temporal_bind))
    return generate_latest(REGISTRY) + generate_latest(own)


class _Process(Collector):
    """Everything of the default registry (our counters, process and Python figures)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _LiveOverview(Collector):
    """Reads the overview on the worker's event loop from the metrics server's thread."""

    def __init__(self, source: OverviewSource, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        future = asyncio.run_coroutine_threadsafe(self._source.get(), self._loop)
        try:
            overview = future.result(OVERVIEW_TIMEOUT)
        except Exception as err:
            future.cancel()
            log.warning("metrics: no overview (%s)", err)
            return []
        return overview_metrics(overview)


class _TemporalMetrics(Collector):
    """The Temporal SDK's own endpoint, read and passed on."""

    def __init__(self, bind: str) -> None:
        host, _, port = bind.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        self._url = f"http://{host}:{port}/metrics"

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=TEMPORAL_TIMEOUT) as response:
                text = response.read().decode()
        except OSError as err:
            log.warning("metrics: Temporal SDK metrics unavailable at %s (%s)", self._url, err)
            return
        yield from text_string_to_metric_families(text)


class MetricsServer:
    """The worker's ``/metrics`` (prometheus-client's server, in a thread of its own)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @classmethod
    def start(
        cls,
        host: str,
        port: int,
        source: OverviewSource,
        *,
        temporal_bind: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> MetricsServer:
        registry = CollectorRegistry(auto_describe=False)
        collectors: list[Collector] = [
            _Process(),
            _LiveOverview(source, loop or asyncio.get_running_loop()),
        ]
        if temporal_bind is not None:
            collectors.append(_TemporalMetrics(temporal_bind))
        for collector in collectors:
            registry.register(collector)
        server, thread = start_http_server(port, addr=host, registry=registry)
        return cls(server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
