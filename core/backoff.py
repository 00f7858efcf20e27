"""Waits between retries: the base delay, doubled after each consecutive failure, capped.

One rule for every loop that retries by hand (the bridge's broker reconnects and its retry
queues' delays, the inbox listener's reconnects, a sync batch's POST, the fake worker's result
POST). A library (tenacity, backoff) retries one call a bounded number of times; it does not fit
the two reconnect loops, which retry for ever and start again from the base delay once connected
(in the middle of what a library would count as one attempt), nor the bridge, which needs the
delay as a number (the TTL of the retry queue a failed message waits in), not as a sleep.

No jitter: the bridge has one retry queue per delay (a jittered delay would make one queue per
message), and each of the other loops is one per process, retrying a service of its own.
"""

from __future__ import annotations

__all__ = ["Backoff", "delay"]


def delay(failures: int, base: float, cap: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1, 2, ...): ``base``,
    doubled each time, at most ``cap`` (None: no cap)."""
    seconds = base * 2 ** max(failures - 1, 0)
    return float(seconds if cap is None else min(seconds, cap))


class Backoff:
    """The consecutive failures of something retried for ever; ``reset()`` once it works."""

    def __init__(self, base: float, cap: float | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Counts a failure; the seconds to wait before the next try."""
        self.failures += 1
        return delay(self.failures, self.base, self.cap)

    def reset(self) -> None:
        self.failures = 0
