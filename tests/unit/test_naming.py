"""Temporal ids of a deployment: with no name prefix the names antenna-jobs always used (so the
runs a single deployment started before prefixes existed are still found), with one, names no
other deployment's job of the same id can take."""

from __future__ import annotations

import pytest

from core.naming import Names, stream_seq_from_reply


def test_no_prefix_keeps_the_names_of_before() -> None:
    names = Names()
    assert names.workflow_id(46) == "job-46"
    assert names.reconcile_schedule_id("antenna-jobs") == "reconcile-antenna-jobs"
    assert names.reconcile_workflow_id("antenna-jobs") == "reconcile-jobs-antenna-jobs"
    assert names.stream(46) == "job_46"


def test_a_prefix_is_on_every_temporal_id() -> None:
    b = Names("b_")
    assert b.workflow_id(46) == "b_job-46"
    assert b.reconcile_schedule_id("q") == "b_reconcile-q"
    assert b.reconcile_workflow_id("q") == "b_reconcile-jobs-q"


@pytest.mark.parametrize("prefix", ["a b", "a.", "a*", "ü"])
def test_a_prefix_is_refused_unless_name_safe(prefix: str) -> None:
    with pytest.raises(ValueError, match="name prefix"):
        Names(prefix)


def test_ack_prefixes_are_those_of_the_subjects_parsed_back() -> None:
    names = Names("b_")
    subject = "$JS.ACK.b_job_46.b_job-46-consumer.1.17.17.1700000000.3"
    assert subject.startswith(names.ack_prefix(46, names.consumer(46)))
    assert subject.startswith(names.ack_prefix(46))
    assert names.ack_prefix(46) == "$JS.ACK.b_job_46."
    assert stream_seq_from_reply(subject) == (names.stream(46), 17)
    assert stream_seq_from_reply("$JS.ACKNOWLEDGED.b_job_46.c.1.17.17.1700000000.3") is None
