"""The settings fingerprint a worker polls with: made, read back from an identity, compared."""

from __future__ import annotations

from core.settings import DatabaseSettings, JobSettings, Settings
from worker.settings_guard import Fingerprint


def settings(
    schema: str = "public", jobs_schema: str = "antenna_jobs", prefix: str = ""
) -> Settings:
    return Settings(
        database=DatabaseSettings(schema_name=schema, jobs_schema=jobs_schema),
        jobs=JobSettings(name_prefix=prefix),
    )


def test_an_identity_carries_the_fingerprint_and_shows_no_names_but_the_prefix() -> None:
    mine = Fingerprint.of("7716574763228575894/antenna", settings("secret_schema", prefix="b_"))
    identity = mine.identity("123@host")
    assert identity.startswith("123@host antenna-jobs/1 db=")
    assert identity.endswith(" prefix=b_")
    assert "secret_schema" not in identity and "antenna" not in identity.split(" db=")[1]
    assert Fingerprint.from_identity(identity) == mine
    empty = Fingerprint.of("x/antenna", settings())
    assert Fingerprint.from_identity(empty.identity()) == empty


def test_identities_without_a_fingerprint_are_not_compared() -> None:
    assert Fingerprint.from_identity("123@host") is None
    assert Fingerprint.from_identity("antenna-jobs/1 db=zz") is None


def test_differences_name_each_setting_that_differs() -> None:
    base = Fingerprint.of("c/db", settings())
    assert base.differences(Fingerprint.of("c/db", settings())) == []
    assert base.differences(Fingerprint.of("c/other", settings())) == ["database"]
    assert base.differences(Fingerprint.of("c/db", settings(prefix="b_"))) == ["prefix"]
    assert base.differences(Fingerprint.of("c/db", settings("s", "s_jobs"))) == [
        "schema",
        "jobs_schema",
    ]
