"""An ML job's progress from its counts: Antenna's process and results stages, and the throughput
line of its log (pure functions)."""

from __future__ import annotations

from core.counters import AggregateCounters
from core.progress import JobProgress
from core.states import JobState


def fraction(done: int, total: int) -> float:
    return 1.0 if total <= 0 else min(1.0, done / total)


def apply_counters(
    progress: JobProgress, counters: AggregateCounters, final: JobState | None = None
) -> JobProgress:
    """The process stage counts failed images as processed (as Antenna does); the results stage
    counts captures (images with saved results), detections (null markers excluded) and
    classifications. Stages are STARTED until ``final`` closes them."""
    updated = progress.model_copy(deep=True)
    if not updated.stages:
        return updated
    share = fraction(counters.done, counters.total)
    status = final or JobState.STARTED
    params = {
        "process": {
            "processed": counters.done,
            "remaining": counters.remaining,
            "failed": counters.failed,
        },
        "results": {
            "captures": counters.processed,
            "detections": counters.detections,
            "classifications": counters.classifications,
        },
    }
    for key, values in params.items():
        updated.update_stage(key, status=status, progress=share, **values)
    if final is not None:
        updated.show_paused(False)
    return updated


def throughput_line(counters: AggregateCounters, elapsed: float) -> str:
    """Antenna's operator line: processed/total, failed, rate in images per minute and the ETA."""
    rate = counters.done / elapsed * 60 if elapsed > 0 else 0.0
    eta = f"{counters.remaining / rate:.1f} min" if rate > 0 else "unknown"
    return (
        f"Processed {counters.done}/{counters.total} images ({counters.failed} failed)"
        f" in {elapsed:.0f} s: {rate:.0f} imgs/min, ETA {eta}"
    )
