"""The process's own Prometheus counters (prometheus-client's default registry, one per process).

Figures of the whole system (jobs, queues, the inbox, worker polls) are not kept here: they are
read on scrape (job_control/overview.py, job_control/metrics.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
