"""The migrations of our own tables (schema ``jobs_schema``): numbered SQL files, run in order by
storage/migrate.py, each in one transaction."""
