"""The Temporal workers of one process: the main queue (workflows + short activities) and the
long queue (collect, publish, aggregate), so long activities never hold the short ones' slots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.antenna_task.celery_link import AntennaCelery
from activities.antenna_task.runner import AntennaTaskActivities
from activities.async_api.results import ResultActivities
from activities.async_api.task_queue import TaskQueueActivities
from activities.images import ImageActivities
from activities.internal.data_export import ExportActivities
from activities.internal.finish import InternalJobActivities
from activities.internal.populate_collection import PopulateActivities
from activities.jobs import JobActivities
from activities.reconcile.repair import ReconcileActivities
from activities.sync_api.process import SyncActivities
from activities.temporal_ops import TemporalActivities
from core import tracing
from core.settings import Settings
from worker.resources import Resources
from worker.schema_errors import SchemaErrorInterceptor
from worker.trace_tags import JobSpanTags
from workflows.registry import WORKFLOWS


def build_workers(
    client: Client,
    settings: Settings,
    resources: Resources,
    request_schema_check: Callable[[], None] | None = None,
    *,
    identity: str | None = None,
) -> list[Worker]:
    """``identity``: what the workers poll as (worker.settings_guard's fingerprint; None: the
    SDK's pid@host)."""
    # Activities refused by a changed Antenna schema say so once in the job log, then retry.
    schema_errors = SchemaErrorInterceptor(resources.pool, request_schema_check)
    jobs = JobActivities(resources.pool, settings)
    images = ImageActivities(resources.pool, settings)
    queue = TaskQueueActivities(
        resources.nc, resources.js, resources.redis, resources.pool, settings
    )
    results = ResultActivities(
        resources.pool,
        resources.nc,
        resources.js,
        resources.redis,
        settings,
        resources.crops,
        resources.inbox_watch,
        request_schema_check,
    )
    temporal = TemporalActivities(client)
    sync = SyncActivities(resources.pool, resources.http, settings, resources.crops)
    populate = PopulateActivities(resources.pool, settings)
    export = ExportActivities(resources.pool, settings)
    internal = InternalJobActivities(resources.pool)
    antenna = AntennaTaskActivities(
        resources.pool, settings, resources.antenna_celery or AntennaCelery(settings.antenna)
    )
    reconcile = ReconcileActivities(
        resources.pool, client, queue, resources.js, resources.redis, settings
    )
    # Traced (the client carries the SDK's TracingInterceptor): activity spans name their job.
    tags = [JobSpanTags()] if tracing.enabled() else []

    def worker(
        task_queue: str, slots: int, activities: list[Callable[..., Any]], **more: Any
    ) -> Worker:
        """A worker of ``task_queue`` running ``activities``, at most ``slots`` at once."""
        return Worker(
            client,
            task_queue=task_queue,
            identity=identity,
            activities=activities,
            max_concurrent_activities=slots,
            interceptors=[schema_errors, *tags],
            graceful_shutdown_timeout=settings.worker.graceful_shutdown,
            **more,
        )

    main = worker(
        settings.jobs.task_queue,
        settings.worker.short_queue_slots,
        [
            jobs.start_job,
            jobs.check_cancel,
            jobs.mark_canceling,
            jobs.set_paused,
            jobs.finalize_job,
            jobs.fail_job,
            jobs.revoke_job,
            queue.reset_job_queue,
            queue.prepare_job_queue,
            queue.cleanup_job_queue,
            temporal.request_cancel,
            sync.choose_service,
            internal.finish_internal_job,
            export.remove_export,
            antenna.start_antenna_job,
            antenna.send_run_job,
            antenna.revoke_run_job,
            reconcile.reconcile_jobs,
            reconcile.remove_leftovers,
        ],
        workflows=WORKFLOWS,
        # A killed worker's sticky queue holds a workflow's next task this long before any
        # worker gets it: part of every crash's recovery time.
        sticky_queue_schedule_to_start_timeout=settings.worker.sticky_timeout,
        max_cached_workflows=settings.worker.max_cached_workflows,
    )
    long = worker(
        settings.jobs.long_task_queue,
        settings.worker.long_queue_slots,
        [
            images.collect_images,
            queue.publish_tasks,
            results.aggregate_results,
            sync.process_batches,
            populate.populate_collection,
            export.export_data,
            antenna.wait_for_row,
        ],
    )
    return [main, long]
