"""Antenna's tables as the migration runner (storage/migrate.py) needs to know them: on
Antenna's own database (``jobs_job`` present) they are only checked for the ones antenna-jobs
cannot work without; on a bare database (CI, demo) they are built from antenna_db/standalone.
"""

from __future__ import annotations

from antenna_db import standalone
from storage.migrate import HostTables

# The Antenna tables migrate requires of an Antenna database (a guard against some other
# database; the start-up check, antenna_db/schema_check.py, then compares the columns of every
# table antenna-jobs uses against the manifest).
REQUIRED_TABLES = (
    "jobs_job",
    "jobs_joblog",
    "main_project",
    "main_sourceimage",
    "main_sourceimagecollection",
    "main_sourceimagecollection_images",
    "main_detection",
    "main_classification",
    "main_occurrence",
    "main_taxon",
    "ml_pipeline",
    "ml_algorithm",
    "ml_processingservice",
    "authtoken_token",
    "users_user",
)

ANTENNA = HostTables(
    name="Antenna",
    scope="antenna",
    package=standalone,
    marker="jobs_job",
    required=REQUIRED_TABLES,
)
