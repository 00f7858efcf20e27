"""The SQL that knows antenna-jobs' own tables (schema ``jobs_schema``): the connection pool, the
migrations that shape the tables, and one module per table (the result inbox, job runs, a run's
images, pipeline polls, job workers). Antenna's tables are ``antenna_db``'s; nothing outside these
two packages writes SQL."""
