"""Faults that must never pass as one flaky test (issue 21): a workflow that does not replay its
own history (a non-determinism error, found by the SDK's core or its Python side) and an eviction
the SDK could not finish. Each fails the test during which it was logged, wherever it happened:
in the test's own workflow, in another test's run replayed meanwhile, or in a query's replay.

Temporal's core logs to stderr unless told otherwise: the test session's runtime forwards its
log to Python's logging (``forward_core_log``, called when pytest starts), where
WorkflowFaults, a handler on the root logger, keeps what matches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

# Lower-cased parts of what the SDK logs for these faults: core's "Nondeterminism error: ..." and
# "force_cause: NonDeterministicError", Python's NondeterminismError, and the eviction failures.
MARKERS = (
    "nondetermin",
    "eviction processed, but",
    "could not be evicted",
    "failed running eviction job",
    "timed out running eviction job",
)


def forward_core_log() -> None:
    """Core's warnings into Python's logging under ``temporal_core``."""
    forwarding = LogForwardingConfig(logger=logging.getLogger("temporal_core"))
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding
    )
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)))


class WorkflowFaults(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            text += f" [{type(err).__name__}: {err}]"
        if any(marker in text.lower() for marker in MARKERS):
            self.found.append(f"{record.name}: {text}")

    def take(self) -> list[str]:
        found, self.found = self.found, []
        return found


_faults = WorkflowFaults()


def pytest_configure(config: pytest.Config) -> None:
    # Before any Temporal client or server exists: core's log reaches the fault watch.
    forward_core_log()


@pytest.fixture(scope="session", autouse=True)
def _watch_workflow_faults() -> Iterator[None]:
    root = logging.getLogger()
    root.addHandler(_faults)
    try:
        yield
    finally:
        root.removeHandler(_faults)


@pytest.fixture(autouse=True)
def workflow_faults() -> Iterator[WorkflowFaults]:
    """Fails the test if a workflow fault was logged while it ran; a test that provokes one on
    purpose takes it with ``workflow_faults.take()``."""
    _faults.take()
    yield _faults
    found = _faults.take()
    if found:
        pytest.fail("workflow faults logged during this test:\n" + "\n".join(found[:10]))
