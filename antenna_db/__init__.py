"""The SQL that knows Antenna's tables: one module per aggregate (jobs, captures, pipelines,
results, users, ...). Nothing outside this package names an Antenna table, but one statement of
storage/inbox.py (``store_for_run``: the inbox insert guarded by the job's row, one round trip).
Our own tables' SQL is storage/'s; this package may use it, never the reverse.

Antenna's database has no column defaults and no triggers (docs/antenna-db.md section 0):
every writer here supplies every NOT NULL column, ``created_at`` and ``updated_at`` included,
never inserts explicit ids, and writes time-zone aware values (``now()``).
"""
