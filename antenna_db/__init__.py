"""The SQL that knows Antenna's tables: one module per aggregate (jobs, captures, pipelines,
results, users, ...). Nothing outside this package names an Antenna table.

Antenna's database has no column defaults and no triggers (docs/antenna-db.md section 0):
every writer here supplies every NOT NULL column, ``created_at`` and ``updated_at`` included,
never inserts explicit ids, and writes time-zone aware values (``now()``).
"""
