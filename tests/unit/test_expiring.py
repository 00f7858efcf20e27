"""core/expiring.py: the bounded, expiring map behind the API's per-key memories."""

from __future__ import annotations

import pytest

from core.expiring import ExpiringMap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_are_pruned_on_the_next_put():
    clock = Clock()
    m: ExpiringMap[str, int] = ExpiringMap(10, 100, clock)
    m.put("a", 1)
    clock.now = 5
    m.put("b", 2)
    assert m.get("a") == 1 and "b" in m
    clock.now = 10
    assert m.get("a") is None and "a" not in m and m.get("b") == 2
    m.put("c", 3)
    assert len(m) == 2 and [k for k, _ in m.items()] == ["b", "c"]
    m.put("b", 4)  # a put refreshes the entry and moves it last
    clock.now = 16
    m.put("d", 5)
    assert [k for k, _ in m.items()] == ["c", "b", "d"] and m.get("b") == 4


def test_past_its_size_the_least_recently_put_goes_first():
    m: ExpiringMap[int, None] = ExpiringMap(1e9, 3, Clock())
    for key in range(1000):
        m.put(key, None)
        assert len(m) <= 3
    assert [k for k, _ in m.items()] == [997, 998, 999]
    with pytest.raises(ValueError):
        ExpiringMap(1, 0)
