"""What the Temporal Web UI shows of a job's workflow: its summary line and details, written once
when the workflow is started (job_control/actions.py)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from antenna_db.job_store import JobRecord


class JobSummary(BaseModel):
    project: str | None
    pipeline_slug: str | None
    # The collection's captures (before the job's limit and the filter of processed ones).
    collection_images: int | None

    def images(self, job: JobRecord) -> str:
        if job.source_image_single_id is not None:
            return "1 image"
        if self.collection_images is None:
            return "no collection"
        n = self.collection_images if job.limit is None else min(job.limit, self.collection_images)
        return f"{n} images"

    def summary(self, job: JobRecord) -> str:
        """One line (the UI's "Summary")."""
        parts = [job.name or f"job {job.id}", f"project {self.project or job.project_id}"]
        if self.pipeline_slug:
            parts.append(f"pipeline {self.pipeline_slug}")
        if job.collection_id is not None or job.source_image_single_id is not None:
            parts.append(self.images(job))
        return " · ".join(parts)

    def details(self, job: JobRecord) -> str:
        """Markdown lines (the UI's "Details")."""
        rows = [
            ("job", f"{job.id} {job.name}"),
            ("type", f"{job.job_type.value} ({job.dispatch_mode.value})"),
            ("project", f"{job.project_id} {self.project or ''}".strip()),
            ("pipeline", self.pipeline_slug or "none"),
            ("collection", "none" if job.collection_id is None else str(job.collection_id)),
            ("images", self.images(job)),
            ("limit", "none" if job.limit is None else str(job.limit)),
        ]
        return "\n".join(f"- **{key}**: {value}" for key, value in rows)


async def job_summary(conn: AsyncConnection[Any], job: JobRecord) -> JobSummary:
    cur = await conn.execute(
        "SELECT (SELECT name FROM main_project WHERE id = %(project)s) AS project,"
        " (SELECT slug FROM ml_pipeline WHERE id = %(pipeline)s) AS pipeline_slug,"
        " (SELECT count(*) FROM main_sourceimagecollection_images"
        "  WHERE sourceimagecollection_id = %(collection)s)::int AS collection_images",
        {"project": job.project_id, "pipeline": job.pipeline_id, "collection": job.collection_id},
    )
    row = await cur.fetchone()
    assert row is not None
    summary = JobSummary.model_validate(row)
    if job.collection_id is None:
        summary.collection_images = None
    return summary
