"""OpenTelemetry traces of job runs, off unless configured (issue 19 item 4).

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) or
``ANTENNA_JOBS_TRACING_ENDPOINT`` is set, or ``ANTENNA_JOBS_TRACING_ENABLED=true`` (the OTLP
exporter's own defaults then apply). Each process installs one tracer provider of its own
(``configure``), not the global one, so a library's spans never leak in and a test installs an
in-memory exporter the same way (``install``).

One trace per job run: the start (the bridge's ``run_job`` message, the API's or the CLI's run)
opens ``antenna_jobs.job.start``; the Temporal SDK's TracingInterceptor (on the client, so every
worker built on it has it too) carries it into the workflow and its activities. The ADC sends no
trace headers, so the run's start activity records its span's context in ``job_runs.trace_context``
and the API starts its ``/tasks/`` and ``/result/`` spans under it; the aggregator's batch saves
are children of its activity's span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.contrib.opentelemetry import TracingInterceptor

from core.settings import TracingSettings

# Attribute names (one prefix, so a trace backend's filter finds every span of a job).
JOB_ID = "antenna_jobs.job_id"
PROJECT_ID = "antenna_jobs.project_id"
PIPELINE = "antenna_jobs.pipeline"
PIPELINE_ID = "antenna_jobs.pipeline_id"
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_TRACER = trace.NoOpTracerProvider().get_tracer("antenna-jobs")


_provider: TracerProvider | None = None


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for this process's spans (None: no spans)."""
    global _provider
    _provider = provider


def configure(settings: TracingSettings, service: str) -> TracerProvider | None:
    """The process's tracer provider exporting over OTLP, if tracing is on (else None)."""
    if not settings.on:
        return None
    if _provider is not None:
        return _provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter: SpanExporter = (
        OTLPSpanExporter(endpoint=f"{settings.endpoint.rstrip('/')}/v1/traces")
        if settings.endpoint
        else OTLPSpanExporter()
    )
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return provider


def shutdown() -> None:
    """Export what is buffered and stop (at process exit)."""
    provider = _provider
    install(None)
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def tracer() -> Tracer:
    return _provider.get_tracer("antenna-jobs") if _provider is not None else _NO_TRACER


def interceptors() -> list[TracingInterceptor]:
    """The Temporal client's interceptors: its workers, workflows and activities trace too."""
    return [TracingInterceptor(tracer())] if enabled() else []


def job_attributes(
    job_id: int,
    project_id: int | None = None,
    pipeline: str | None = None,
    pipeline_id: int | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {JOB_ID: job_id}
    if project_id is not None:
        found[PROJECT_ID] = project_id
    if pipeline:
        found[PIPELINE] = pipeline
    if pipeline_id is not None:
        found[PIPELINE_ID] = pipeline_id
    return found


def current_context() -> str | None:
    """The current span's W3C traceparent (None when nothing is traced)."""
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A span named ``name`` under the current one; a no-op span while tracing is off."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def run_span(name: str, attributes: dict[str, Any], run_context: str | None) -> Iterator[Span]:
    """A span in a job run's trace (``run_context``: its recorded traceparent); none for a job
    whose run is not traced (or not started yet): it would be a trace of its own."""
    if run_context is None:
        yield trace.INVALID_SPAN
        return
    parent = _PROPAGATOR.extract({"traceparent": run_context})
    with tracer().start_as_current_span(name, context=parent, attributes=attributes) as current:
        yield current


def tag(attributes: dict[str, Any]) -> None:
    """Add attributes to the current span (e.g. the SDK's RunActivity span)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)
