"""core/backoff.py: the waits every retry loop uses."""

from __future__ import annotations

from core.backoff import Backoff, delay


def test_delay_doubles_from_the_base_up_to_the_cap() -> None:
    assert [delay(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [delay(n, 0.5) for n in range(1, 5)] == [0.5, 1, 2, 4]
    assert delay(0, 0.05, 0.3) == 0.05


def test_backoff_counts_failures_until_reset() -> None:
    reconnect = Backoff(1.0, 4.0)
    assert [reconnect.failed() for _ in range(4)] == [1, 2, 4, 4]
    reconnect.reset()
    assert reconnect.failed() == 1
