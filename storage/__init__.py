"""The SQL that knows antenna-jobs' own tables (schema ``jobs_schema``); Antenna's tables are
``antenna_db``'s, and nothing outside these two packages queries a table. Imports only ``core``
(``antenna_db`` imports this package, never the reverse: the migration runner is handed
Antenna's tables, antenna_db/schema.py).

- ``pool``: the connection pool every process opens, and each connection's settings;
- ``migrate``: the migration runner (our ``migrations`` beside the Antenna tables it is handed);
- ``migrations``: the numbered SQL files that shape our tables;
- ``server``: the server itself (a ping, its clock, which database a URL reaches);
- ``inbox``: posted results waiting to be saved (``result_inbox``, ``result_arrays``);
- ``job_runs``: which workflow run owns a job, and its counters;
- ``job_images``: a job's image set and each image's outcome;
- ``job_workers``: the processing workers' calls per run, and registered service names;
- ``pipeline_polls``: when a worker last polled each pipeline;
- ``bridge_reports``: the bridge's last view of Antenna's broker.
"""
