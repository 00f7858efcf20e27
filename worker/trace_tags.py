"""Tags the Temporal SDK's RunActivity spans with the job they work for (issue 19 item 4).

The SDK's TracingInterceptor (on the client, so outermost) opens the span; this interceptor runs
inside it and adds ``antenna_jobs.job_id`` (and the project and pipeline when the input carries
them), read from the activity's input model: every activity input of ours names its job.
"""

from __future__ import annotations

from typing import Any

from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core import tracing


def _attributes(args: Any) -> dict[str, Any]:
    for arg in args:
        job_id = getattr(arg, "job_id", None)
        if isinstance(job_id, int):
            project = getattr(arg, "project_id", None)
            pipeline = getattr(arg, "pipeline_slug", None)
            return tracing.job_attributes(
                job_id,
                project if isinstance(project, int) else None,
                pipeline if isinstance(pipeline, str) else None,
            )
    return {}


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        attributes = _attributes(input.args)
        if attributes:
            tracing.tag(attributes)
        return await self.next.execute_activity(input)


class JobSpanTags(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)
