"""Deterministic orchestration only: one module per workflow.

These run for days across our releases, and a worker rebuilds a run by replaying its history on
the code it has now. Activities, queries, log and detail text may change freely; any change to
the sequence of commands a workflow issues (an activity, timer, signal sent, child workflow or
search-attribute upsert added, removed, reordered or renamed) goes behind ``workflow.patched()``
(README, "Changing workflow code"). tests/workflows/test_recorded_histories.py replays every
committed history (tests/histories/) on this code; ``antenna-jobs replay`` checks the runs open
in production before a deploy.
"""
