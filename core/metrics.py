"""The process's own Prometheus counters (prometheus-client's default registry, one per process).

Figures of the whole system (jobs, queues, the inbox, worker polls) are not kept here: they are
read on scrape (job_control/overview.py, job_control/metrics.py).
"""

from __future__ import annotations

from prometheus_client import Counter

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
# Both series exist (at 0) from the start, so rate() has a baseline before the first save.
for _outcome in ("processed", "failed"):
    RESULTS_SAVED.labels(_outcome)
