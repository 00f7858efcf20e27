"""Print the recovery times the chaos and cancellation tests recorded, as a median table.

    .venv/bin/python -m tests.chaos.report [--profile full]

Reads .state/chaos-recovery.jsonl (written by tests/helpers/chaos.record_recovery); ``make
chaos`` empties it first and prints this at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

from tests.helpers.chaos import RECOVERY_LOG


def table(profile: str | None) -> str:
    times: dict[str, list[float]] = defaultdict(list)
    if RECOVERY_LOG.exists():
        for line in RECOVERY_LOG.read_text().splitlines():
            row = json.loads(line)
            if profile is None or row["profile"] == profile:
                times[row["fault"]].append(float(row["seconds"]))
    if not times:
        return "no recovery times recorded"
    width = max(len(f) for f in times)
    lines = [f"{'fault or path':<{width}}  runs  median s   max s"]
    for fault in sorted(times):
        xs = times[fault]
        lines.append(
            f"{fault:<{width}}  {len(xs):>4}  {statistics.median(xs):>8.2f}  {max(xs):>6.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="only runs of this test profile")
    print(table(parser.parse_args().profile))
