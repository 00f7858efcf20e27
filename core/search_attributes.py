"""Custom search attributes the job workflow sets, so operators can filter jobs in the Web UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

JOB_ID = SearchAttributeKey.for_int("AntennaJobId")
JOB_STATUS = SearchAttributeKey.for_keyword("AntennaJobStatus")
PROJECT_ID = SearchAttributeKey.for_int("AntennaProjectId")
# Set when the workflow is started (job_control/actions.py): the pipeline's slug ("" for jobs
# without one) and Antenna's job_type_key (ml, data_export, ...).
PIPELINE_SLUG = SearchAttributeKey.for_keyword("AntennaPipelineSlug")
JOB_TYPE = SearchAttributeKey.for_keyword("AntennaJobType")

ALL = (JOB_ID, JOB_STATUS, PROJECT_ID, PIPELINE_SLUG, JOB_TYPE)


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    kinds = {"INT": "Int", "KEYWORD": "Keyword"}
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags
