"""The job's progress JSON, in Antenna's shape (summary, stages with params, errors, logs).

Pure functions over pydantic models; the aggregator is the only writer while a job runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.states import JobState

ParamValue = int | float | str | None
PAUSED_STAGE = "process"
PAUSED_KEY = "paused"
# The process stage's param while no processing worker polls the job's pipeline.
WORKERS_KEY = "workers"
# The process stage's params while workers serve the job: who (with their rate and last call),
# and when the job will end at their recent rate (core/worker_calls.py).
SERVING_KEY = "serving"
ETA_KEY = "eta"
# Params that say how a running job is doing now (paused, waiting for workers, who serves it,
# its ETA): a job that ended, in whatever state, carries none of them.
RUN_PARAMS = (PAUSED_KEY, WORKERS_KEY, SERVING_KEY, ETA_KEY)


class _AntennaModel(BaseModel):
    # Rows Antenna wrote may carry fields we do not know (e.g. a stage's description): they are
    # kept, so saving the progress back never drops what Antenna's parser expects.
    model_config = ConfigDict(extra="allow")


class StageParam(_AntennaModel):
    # Antenna's own writers always set both; a row written otherwise must still be readable.
    name: str = ""
    key: str = ""
    category: str = "default"
    value: Any = ""


class Stage(_AntennaModel):
    key: str
    # Shown as the key when a row's stage has none (a stage without a name must not make the
    # row unreadable: issue 16).
    name: str = ""
    status: JobState = JobState.CREATED
    progress: float = 0.0
    params: list[StageParam] = Field(default_factory=list)

    def param(self, key: str) -> Any:
        for p in self.params:
            if p.key == key:
                return p.value
        return None

    def set_param(self, key: str, value: ParamValue, name: str | None = None) -> None:
        for p in self.params:
            if p.key == key:
                p.value = value
                return
        title = name or key.replace("_", " ").title()
        self.params.append(StageParam(name=title, key=key, value=value))

    def drop_param(self, key: str) -> bool:
        """Remove the param; True if it was there."""
        kept = [p for p in self.params if p.key != key]
        dropped = len(kept) != len(self.params)
        self.params = kept
        return dropped


class Summary(_AntennaModel):
    status: JobState = JobState.CREATED
    progress: float = 0.0


class JobProgress(_AntennaModel):
    summary: Summary = Field(default_factory=Summary)
    stages: list[Stage] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    logs: list[str] = Field(default_factory=list)

    def stage(self, key: str) -> Stage:
        for s in self.stages:
            if s.key == key:
                return s
        raise KeyError(f"progress has no stage {key!r}")

    def update_stage(
        self,
        key: str,
        *,
        status: JobState | None = None,
        progress: float | None = None,
        **params: ParamValue,
    ) -> None:
        try:
            stage = self.stage(key)
        except KeyError:
            # A row written elsewhere (Antenna) may lack one of our stages: it is added.
            stage = Stage(key=key, name=key.replace("_", " ").capitalize())
            self.stages.append(stage)
        if status is not None:
            stage.status = status
        if progress is not None:
            stage.progress = max(0.0, min(1.0, progress))
        for name, value in params.items():
            stage.set_param(name, value)
        if stage.status == JobState.CREATED and stage.progress > 0:
            stage.status = JobState.STARTED
        self._summarise()

    def show_paused(self, paused: bool) -> None:
        """A "Paused: yes" param on the process stage while the run is paused (Antenna's stage
        panel shows params by name and value; the status stays one of Antenna's)."""
        try:
            stage = self.stage(PAUSED_STAGE)
        except KeyError:
            return
        if paused:
            stage.set_param(PAUSED_KEY, "yes")
        else:
            stage.params = [p for p in stage.params if p.key != PAUSED_KEY]

    def clear_run_params(self) -> bool:
        """Remove RUN_PARAMS from the process stage; True if there were any."""
        try:
            stage = self.stage(PAUSED_STAGE)
        except KeyError:
            return False
        kept = [p for p in stage.params if p.key not in RUN_PARAMS]
        if len(kept) == len(stage.params):
            return False
        stage.params = kept
        return True

    @property
    def paused(self) -> bool:
        try:
            return bool(self.stage(PAUSED_STAGE).param(PAUSED_KEY) == "yes")
        except KeyError:
            return False

    def _summarise(self) -> None:
        if self.stages:
            self.summary.progress = sum(s.progress for s in self.stages) / len(self.stages)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _stage(key: str, name: str, *param_keys: tuple[str, str]) -> Stage:
    return Stage(key=key, name=name, params=[StageParam(name=n, key=k) for k, n in param_keys])


def new_ml_progress() -> JobProgress:
    """The stages of an ML job, complete before it runs (Antenna's Job.setup())."""
    return JobProgress(
        stages=[
            _stage("collect", "Collect", ("total_images", "Total Images")),
            _stage(
                "process",
                "Process",
                ("processed", "Processed"),
                ("remaining", "Remaining"),
                ("failed", "Failed"),
            ),
            _stage(
                "results",
                "Results",
                ("captures", "Captures"),
                ("detections", "Detections"),
                ("classifications", "Classifications"),
            ),
        ]
    )


def new_populate_progress() -> JobProgress:
    """populate_captures_collection: Antenna's one stage, with what was sampled and added."""
    return JobProgress(
        stages=[
            _stage(
                "populate_captures_collection",
                "Populate captures collection",
                ("method", "Method"),
                ("captures_considered", "Captures considered"),
                ("captures_added", "Captures added"),
            )
        ]
    )


def new_export_progress() -> JobProgress:
    """data_export: rows streamed to the file, then the finished file moved into place."""
    return JobProgress(
        stages=[
            _stage(
                "exporting_data",
                "Exporting data",
                ("format", "Format"),
                ("total_records", "Total records"),
                ("records_exported", "Records exported"),
            ),
            _stage(
                "saving_file",
                "Saving file",
                ("file_path", "File path"),
                ("file_size", "File size"),
            ),
        ]
    )


def reset_progress(progress: JobProgress) -> JobProgress:
    """Antenna's JobProgress.reset() for a retry: stages back to CREATED, numbers back to 0."""
    fresh = progress.model_copy(deep=True)
    fresh.summary = Summary()
    for stage in fresh.stages:
        stage.status = JobState.CREATED
        stage.progress = 0.0
        for p in stage.params:
            if isinstance(p.value, int | float):
                p.value = 0
    return fresh
