"""A test's own settings on top of the ``settings`` fixture (this test's task queues, the
session's schemas): ``with_settings(settings, jobs={...}, nats={...})``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.settings import Settings

# A cancel or a crash reaches a running activity within about a second.
SHORT_HEARTBEATS: dict[str, Any] = {
    "heartbeat_timeout": timedelta(seconds=2),
    "heartbeat_interval": timedelta(seconds=0.3),
}
# A killed worker is noticed within seconds: short heartbeats and short-activity attempts, and
# its replacement takes over the sticky queue at once.
CRASH_JOBS: dict[str, Any] = {
    **SHORT_HEARTBEATS,
    "short_activity_timeout": timedelta(seconds=5),
    "progress_interval": timedelta(seconds=0.2),
}
CRASH_WORKER: dict[str, Any] = {
    "graceful_shutdown": timedelta(0),
    "sticky_timeout": timedelta(seconds=1),
}


def with_settings(settings: Settings, **groups: Mapping[str, Any] | BaseModel) -> Settings:
    """``settings`` with some fields of some groups replaced, each value validated as the
    group's field (``5``, ``"5s"`` or a timedelta for a duration), other fields kept; a group
    given as a settings object replaces the group whole."""
    update: dict[str, Any] = {}
    for name, values in groups.items():
        if isinstance(values, BaseModel):
            update[name] = values
            continue
        group = getattr(settings, name).model_copy(deep=True)
        for field, value in values.items():
            type(group).__pydantic_validator__.validate_assignment(group, field, value)
        update[name] = group
    return settings.model_copy(update=update)


def with_crashes(
    settings: Settings, *, jobs: Mapping[str, Any] | None = None, **groups: Any
) -> Settings:
    """The chaos tests' settings: a crash noticed within seconds (CRASH_JOBS with ``jobs``,
    CRASH_WORKER), no reconcile schedule; ``groups`` as with_settings."""
    return with_settings(
        settings,
        jobs={**CRASH_JOBS, **(jobs or {})},
        worker=CRASH_WORKER,
        reconcile={"interval": timedelta(0)},
        **groups,
    )


def with_export(settings: Settings, directory: Path, **values: Any) -> Settings:
    """Exports written under ``directory``/exports (``values``: more ExportSettings), their
    progress written at every page."""
    return with_settings(
        settings,
        export={"dir": directory / "exports", **values},
        jobs={"progress_interval": timedelta(0)},
    )
