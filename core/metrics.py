"""The process's own Prometheus counters (prometheus-client's default registry, one per process).

Figures of the whole system (jobs, queues, the inbox, worker polls) are not kept here: they are
read on scrape (job_control/overview.py, job_control/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

# Per image: one result saved (processed) or one image counted failed, by this process's
# aggregators and SYNC_API batch runners. rate() of it is the results saved per second.
RESULTS_SAVED = Counter(
    "antenna_jobs_results_saved",
    "Images whose outcome this process saved (processed: results stored; failed: counted failed)",
    ["outcome"],
)
# Result entries the API stored in the inbox (before acking their task).
RESULTS_RECEIVED = Counter(
    "antenna_jobs_results_received",
    "Result entries this API process stored in the result inbox",
)
# Saves refused because Antenna's schema changed (the results wait in the inbox), by table.
SCHEMA_REFUSALS = Counter(
    "antenna_jobs_schema_refusals",
    "Saves and activity attempts refused because Antenna's schema changed (nothing is lost:"
    " results wait in the inbox, activities retry with backoff)",
    ["table"],
)
# Differences that matter between Antenna's schema and the manifest, at this process's last
# check (at start, on the worker's schedule, after a refusal).
SCHEMA_PROBLEMS = Gauge(
    "antenna_jobs_schema_problems",
    "Differences that matter between Antenna's live schema and antenna-jobs' manifest, at this"
    " process's last check",
)
# Both series exist (at 0) from the start, so rate() has a baseline before the first save.
for _outcome in ("processed", "failed"):
    RESULTS_SAVED.labels(_outcome)

# Every API request by its route template (``/api/v2/jobs/{job_id}/tasks/``, never the raw path:
# the label set stays as small as the route table), method and HTTP status; observed by
# api/request_metrics.py. Buckets reach 60 s: a moths-model result post (150 MB) takes seconds.
API_REQUEST_SECONDS = Histogram(
    "antenna_jobs_api_request_seconds",
    "API requests by route template, method and status: from the request to the end of its answer",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# Per running job and worker (issue 19 item 5), read on scrape from job_workers like the other
# per-job figures (job_control/metrics.py adds them to the overview's families). Labels: the
# job's (job_id, project_id, pipeline) plus the worker's shown name and user.
JOB_WORKER_LABELS = ["worker", "user"]


def job_worker_families(
    rows: Iterable[tuple[list[str], str, str, float, float, float]],
) -> list[Metric]:
    """From (job labels, worker name, user, last call as Unix time, images/s, results posted)."""
    labels = ["job_id", "project_id", "pipeline", *JOB_WORKER_LABELS]
    last_call = GaugeMetricFamily(
        "antenna_jobs_job_worker_last_call_timestamp_seconds",
        "Per running job and worker: its last /tasks/ or /result/ call, Unix time",
        labels=labels,
    )
    rate = GaugeMetricFamily(
        "antenna_jobs_job_worker_images_per_second",
        "Per running job and worker: results posted per second within the recent window",
        labels=labels,
    )
    results = GaugeMetricFamily(
        "antenna_jobs_job_worker_results_posted",
        "Per running job and worker: results posted in the current run",
        labels=labels,
    )
    for job_labels, name, user, called, per_second, posted in rows:
        values = [*job_labels, name, user]
        last_call.add_metric(values, called)
        rate.add_metric(values, per_second)
        results.add_metric(values, posted)
    return [last_call, rate, results]


def job_eta_family(rows: Iterable[tuple[list[str], float]]) -> Metric:
    """From (job labels, seconds): the ETA of each running job at its workers' recent rate."""
    eta = GaugeMetricFamily(
        "antenna_jobs_job_eta_seconds",
        "Per running job: seconds until every image is counted, at the recent rate of the"
        " workers serving it (absent without a rate)",
        labels=["job_id", "project_id", "pipeline"],
    )
    for labels, seconds in rows:
        eta.add_metric(labels, seconds)
    return eta
