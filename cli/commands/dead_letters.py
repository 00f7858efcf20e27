"""``antenna-jobs dead-letters list|replay``: run_job messages the bridge gave up on.

The bridge keeps them in ``{jobs}.dead-letter`` on Antenna's broker, each with the reason and the
attempts made (bridge/dead_letters.py). Replay once the cause is fixed (a migration applied, a
bridge that knows the job type): the message goes back to the jobs queue with its attempts reset.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from kombu.exceptions import OperationalError

from bridge.dead_letters import DeadLetterView, list_dead_letters, replay_dead_letters
from cli.commands.context import console, fail, load_settings, user_errors

dead_letter_app = typer.Typer(
    help="run_job messages the bridge gave up on (list, replay).", no_args_is_help=True
)


def _broker() -> tuple[str, str]:
    settings = load_settings().antenna
    with user_errors():
        url = settings.require_broker_url()
    return url, settings.jobs_queue


def _line(letter: DeadLetterView) -> str:
    job = f"job {letter.job_id}" if letter.job_id is not None else "no job"
    return (
        f"{letter.dead_lettered_at or '?'}  {job}  task {letter.task_id or '?'}"
        f"  attempts {letter.attempts or '?'}  {letter.reason or '(no reason)'}"
    )


@dead_letter_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The dead letters, oldest first, with their reason (nothing is removed)."""
    url, queue = _broker()
    try:
        letters = list_dead_letters(url, queue)
    except (OSError, OperationalError) as err:
        fail(f"cannot reach the broker ({err})")
    if as_json:
        typer.echo(json.dumps([letter.model_dump() for letter in letters]))
        return
    if not letters:
        console.print(f"no dead letters for queue {queue!r}")
    for letter in letters:
        console.print(_line(letter), markup=False, highlight=False)


@dead_letter_app.command("replay")
def replay(
    job: Annotated[int | None, typer.Option(help="Only the messages of this job")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter")] = False,
) -> None:
    """Send dead letters back to the jobs queue (their attempts start again)."""
    if (job is None) == (not all_):
        fail("give --job N or --all")
    url, queue = _broker()
    try:
        letters = replay_dead_letters(url, queue, job_id=job)
    except (OSError, OperationalError) as err:
        fail(f"cannot reach the broker ({err})")
    for letter in letters:
        console.print(f"replayed: {_line(letter)}", markup=False, highlight=False)
    console.print(f"{len(letters)} message(s) sent back to {queue!r}")
