"""The durable inbox of posted results: written by the API before it acks, drained by the
aggregator, which saves and deletes rows in one transaction so a replay cannot count twice.

A stored result keeps its full score and logit arrays for the saver's INSERT to read in the
database; the aggregator itself only reads a light form of each row (``claim``), without them
(core/result_payload.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from core.result_arrays import COPY_HEADER, COPY_TRAILER, ArrayRow
from core.result_payload import light
from core.text import STORED_ERROR_CHARS, storable


@dataclass(frozen=True)
class InboxEntry:
    image_id: int | None
    reply_subject: str
    is_error: bool
    # The result as JSON text (already validated and normalised by the API); without the
    # classifications' arrays when they are in ``arrays`` (core/result_arrays.py).
    payload: str
    arrays: Sequence[ArrayRow] = ()


# The NOTIFY channel of new inbox rows is the jobs schema's name and this (``channel``).
_CHANNEL_SUFFIX = ".inbox"


def channel(jobs_schema: str) -> str:
    """The NOTIFY channel of new inbox rows (payload: the job id), one per jobs schema: the
    schema is first in every connection's search_path, so ``store`` names it current_schema()."""
    return f"{jobs_schema}{_CHANNEL_SUFFIX}"


_INSERT = (
    "INSERT INTO result_inbox (job_id, image_id, reply_subject, is_error, payload)"
    " VALUES (%s, %s, %s, %s, %s::jsonb) RETURNING id"
)


# Posts whose payloads add up to less than this go in as one statement (arrays of parameters);
# bigger ones row by row, pipelined, so no parameter is ever hundreds of MB.
_ONE_STATEMENT = 8 * 1024 * 1024
# The entries' rows, from arrays of their columns (``_rows``), in the entries' order.
_ROWS = (
    " INSERT INTO result_inbox (job_id, image_id, reply_subject, is_error, payload)"
    " SELECT %(job)s, e.image_id, e.reply_subject, e.is_error, e.payload"
    " FROM unnest(%(images)s::bigint[], %(subjects)s::text[], %(errors)s::boolean[],"
    "             %(payloads)s::jsonb[])"
    "      WITH ORDINALITY AS e(image_id, reply_subject, is_error, payload, n)"
)
# The arrays of big results (core/result_arrays.py: ArrayRow.copy_row), in COPY's binary form.
_COPY_ARRAYS = (
    "COPY result_arrays (inbox_id, det, cls, scores, logits, score) FROM STDIN (FORMAT BINARY)"
)
_NOTIFY = f"SELECT pg_notify(current_schema() || '{_CHANNEL_SUFFIX}', %(job_text)s)"
_INSERT_ALL = (
    f"WITH stored AS ({_ROWS} ORDER BY e.n RETURNING id), announced AS ({_NOTIFY})"
    " SELECT id FROM stored, announced ORDER BY id"
)
# _INSERT_ALL guarded by the job's state, all in one statement: the job row is read FOR SHARE
# (a status change or a new run waits for the rows to commit, or is seen and nothing is stored).
# One round trip where BEGIN, the guard, the insert and COMMIT took four. ``announced`` is
# selected so that it runs (a CTE nobody reads is skipped). The one statement outside antenna_db
# that names an Antenna table (jobs_job): the guard cannot be a statement of its own.
_INSERT_FOR_RUN = (
    "WITH run AS ("
    " SELECT j.status, r.run_id FROM jobs_job j LEFT JOIN job_runs r ON r.job_id = j.id"
    " WHERE j.id = %(job)s FOR SHARE OF j),"
    f" stored AS ({_ROWS}"
    " WHERE EXISTS (SELECT 1 FROM run WHERE run.status = ANY(%(accepting)s::text[])"
    "               AND run.run_id = %(run)s)"
    " ORDER BY e.n RETURNING id),"
    f" announced AS ({_NOTIFY} WHERE EXISTS (SELECT 1 FROM stored))"
    " SELECT (SELECT status FROM run) AS status,"
    " (SELECT count(*) FROM announced) AS announced,"
    " ARRAY(SELECT id FROM stored ORDER BY id) AS ids"
)


def _rows(job_id: int, entries: list[InboxEntry]) -> dict[str, Any]:
    return {
        "job": job_id,
        "images": [e.image_id for e in entries],
        "subjects": [e.reply_subject for e in entries],
        "errors": [e.is_error for e in entries],
        "payloads": [e.payload for e in entries],
        "job_text": str(job_id),
    }


def one_statement(entries: list[InboxEntry]) -> bool:
    """Whether the entries go in as one statement (small results, arrays inline)."""
    return (
        not any(e.arrays for e in entries) and sum(len(e.payload) for e in entries) < _ONE_STATEMENT
    )


async def store_for_run(
    conn: AsyncConnection[Any],
    job_id: int,
    run_id: str,
    accepting: frozenset[str],
    entries: list[InboxEntry],
) -> tuple[str | None, list[int] | None]:
    """``store`` for entries that fit ``one_statement``, only while the job's status is one
    of ``accepting`` and its current run is ``run_id``: (the status, the row ids or None
    when nothing was stored). Status None: no such job."""
    cur = await conn.execute(
        _INSERT_FOR_RUN,
        _rows(job_id, entries) | {"accepting": sorted(accepting), "run": run_id},
    )
    row = await cur.fetchone()
    assert row is not None
    ids = [int(i) for i in row["ids"]]
    if row["status"] is None or (not ids and entries):
        return row["status"], None
    return row["status"], ids


async def store(conn: AsyncConnection[Any], job_id: int, entries: list[InboxEntry]) -> list[int]:
    """Insert entries (one row each, pipelined: a 150 MB post never becomes one parameter),
    copy their arrays into result_arrays, and announce them on ``channel`` (delivered when the
    caller's transaction commits; one notification per job and transaction); returns their row
    ids in the same order."""
    if not entries:
        return []
    if one_statement(entries):
        # The usual post (small results): one statement, one round trip.
        cur = await conn.execute(_INSERT_ALL, _rows(job_id, entries))
        return [int(row["id"]) for row in await cur.fetchall()]
    async with conn.cursor() as cur:
        await cur.executemany(
            _INSERT,
            [(job_id, e.image_id, e.reply_subject, e.is_error, e.payload) for e in entries],
            returning=True,
        )
        ids: list[int] = []
        while True:
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row["id"]))
            if not cur.nextset():
                break
    if any(e.arrays for e in entries):
        async with conn.cursor().copy(_COPY_ARRAYS) as copy:
            await copy.write(COPY_HEADER)
            for row_id, entry in zip(ids, entries, strict=True):
                for array in entry.arrays:
                    await copy.write(array.copy_row(row_id))
            await copy.write(COPY_TRAILER)
    await conn.execute(_NOTIFY, {"job_text": str(job_id)})
    return ids


class ClaimedRow(BaseModel):
    id: int
    image_id: int | None
    reply_subject: str
    is_error: bool
    attempts: int
    # The error result, or the light form of a success result (a dict until parsed).
    light: dict[str, Any]


async def claim(
    conn: AsyncConnection[Any], job_id: int, limit: int, *, ids: list[int] | None = None
) -> list[ClaimedRow]:
    """Lock up to ``limit`` of the job's oldest rows (others' locked rows skipped), light."""
    only = " AND id = ANY(%(ids)s::bigint[])" if ids is not None else ""
    cur = await conn.execute(
        "SELECT id, image_id, reply_subject, is_error, attempts, payload AS light"
        f" FROM result_inbox WHERE job_id = %(job)s{only}"
        " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {"job": job_id, "limit": limit, "ids": ids},
    )
    rows = await cur.fetchall()
    for row in rows:
        row["light"] = light(row["light"], row["is_error"])
    # Our own rows, of the types the columns have: built without validating them again.
    return [ClaimedRow.model_construct(**row) for row in rows]


async def waiting(conn: AsyncConnection[Any], job_id: int) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM result_inbox WHERE job_id = %s) AS waiting", (job_id,)
    )
    row = await cur.fetchone()
    return bool(row and row["waiting"])


async def depth(conn: AsyncConnection[Any]) -> tuple[int, float | None]:
    """Rows not yet saved, of every job, and seconds since the oldest was posted (None: none)."""
    cur = await conn.execute(
        "SELECT count(*)::int AS depth,"
        " extract(epoch FROM now() - min(received_at))::float8 AS oldest FROM result_inbox"
    )
    row = await cur.fetchone()
    return (int(row["depth"]), row["oldest"]) if row else (0, None)


async def delete(conn: AsyncConnection[Any], ids: list[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM result_inbox WHERE id = ANY(%s::bigint[])", (ids,))


async def record_failure(conn: AsyncConnection[Any], row_id: int, error: str) -> int:
    """One more failed save of a row; its attempts now."""
    cur = await conn.execute(
        "UPDATE result_inbox SET attempts = attempts + 1, last_error = %s WHERE id = %s"
        " RETURNING attempts",
        (storable(error, STORED_ERROR_CHARS), row_id),
    )
    row = await cur.fetchone()
    return int(row["attempts"]) if row else 0


async def remove_job(conn: AsyncConnection[Any], job_id: int) -> None:
    await conn.execute("DELETE FROM result_inbox WHERE job_id = %s", (job_id,))
