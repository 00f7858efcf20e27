"""Fair share of the workers' capacity: which job may be handed tasks now, and which jobs a
worker's listing shows first. Pure functions over a snapshot of the running jobs' queues.

The ADC works on a listed job until ``/tasks/`` answers ``[]``, then moves to the next listed job
and polls the listing again. So capacity moves between jobs by answering ``[]``: a job whose
project holds more than its share of the tasks in flight (shares by project weight, among the
projects with work) while a job of another project waits is answered ``[]``; within a project,
the same between its jobs (equal shares). The least-served job is always below its share, so
something is always served, and a job with no rival waiting gets all the capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class JobLoad:
    """A running async job's queue as its consumer reports it."""

    job_id: int
    project_id: int
    pipeline_slug: str | None
    # Delivered to a worker, not acked yet (NATS num_ack_pending).
    in_flight: int
    # Not delivered yet (NATS num_pending).
    waiting: int


Weight = Callable[[int], float]
Servable = Callable[[JobLoad], bool]


def _project_loads(loads: Iterable[JobLoad]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for load in loads:
        totals[load.project_id] = totals.get(load.project_id, 0) + load.in_flight
    return totals


def withheld(
    loads: dict[int, JobLoad], job_id: int, weight: Weight, servable: Servable, slack: int = 0
) -> str | None:
    """Why ``job_id`` gets no tasks now (None: it may be served). ``slack`` (the batch asked
    for) is how far over its share a job may still be served, so workers do not hop between
    jobs at every batch around the share's edge; the least served is still always served."""
    me = loads.get(job_id)
    if me is None:
        return None
    waiting = [x for x in loads.values() if x.waiting > 0 and servable(x)]
    demand = {x.job_id: x for x in waiting if x.job_id != job_id}
    demand.update({x.job_id: x for x in loads.values() if x.in_flight > 0})
    demand[job_id] = me
    per_project = _project_loads(loads.values())
    mine = per_project.get(me.project_id, 0)

    rivals = [x for x in waiting if x.project_id != me.project_id]
    if rivals:
        projects = {x.project_id for x in demand.values()}
        total = sum(per_project.values())
        share = total * weight(me.project_id) / sum(weight(p) for p in projects)
        if mine > share + slack:
            rival = min(rivals, key=lambda x: per_project.get(x.project_id, 0))
            return (
                f"project {me.project_id} holds {mine} of the {total} tasks in flight (its share"
                f" {share:.0f}) while job {rival.job_id} of project {rival.project_id} waits"
            )
    siblings = [x for x in waiting if x.project_id == me.project_id and x.job_id != job_id]
    if siblings:
        jobs = [x for x in demand.values() if x.project_id == me.project_id]
        share = mine / len(jobs)
        if me.in_flight > share + slack:
            sibling = min(siblings, key=lambda x: x.in_flight)
            return (
                f"job {job_id} holds {me.in_flight} of its project's {mine} tasks in flight (its"
                f" share {share:.0f}) while job {sibling.job_id} of the project waits"
            )
    return None


def least_served_first(
    loads: dict[int, JobLoad], rows: list[tuple[int, int]], weight: Weight
) -> list[int]:
    """Job ids of ``rows`` (job id, project id), jobs with tasks waiting first, the least served
    (project in flight by weight, then the job's own) before the others; a stable sort, so
    ties keep the order ``rows`` came in (random)."""
    per_project = _project_loads(loads.values())

    def key(row: tuple[int, int]) -> tuple[int, float, int]:
        job_id, project_id = row
        load = loads.get(job_id)
        if load is None or load.waiting <= 0:
            return (1, 0.0, 0)
        return (0, per_project.get(project_id, 0) / weight(project_id), load.in_flight)

    return [job_id for job_id, _ in sorted(rows, key=key)]
