"""The decisions on a route's set (relay.sets): when a set closes, why, and with which objects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay import sets
from relay.sets import Arrival, SetRule, decide
from tests.conftest import NOW


def arrival(seconds: float, digest: str, *, marker: bool = False) -> Arrival:
    at = NOW + timedelta(seconds=seconds)
    return Arrival(sets.stamp(at), digest, f"gs://b/run/{digest}", 1, marker)


def test_a_set_of_size_n_closes_at_its_nth_object_whatever_the_order_they_were_delivered_in():
    rule = SetRule(size=3)
    three = [arrival(2, "c"), arrival(0, "a"), arrival(1, "b")]
    assert decide(rule, three[:2], NOW) is None
    closing = decide(rule, three, NOW)
    assert closing is not None and closing.reason == sets.SIZE and closing.complete
    assert closing.objects == ("gs://b/run/a", "gs://b/run/b", "gs://b/run/c")


def test_objects_past_the_size_are_left_for_the_next_set():
    closing = decide(SetRule(size=2), [arrival(0, "a"), arrival(1, "b"), arrival(2, "c")], NOW)
    assert closing is not None and [m.digest for m in closing.members] == ["a", "b"]


def test_a_redelivered_object_counts_once_at_its_first_arrival():
    rule = SetRule(size=2)
    assert decide(rule, [arrival(0, "a"), arrival(5, "a")], NOW) is None


def test_the_marker_closes_the_set_with_every_object_that_arrived_and_is_no_object_of_it():
    rule = SetRule(marker="_SUCCESS")
    assert decide(rule, [arrival(0, "a")], NOW) is None
    closing = decide(rule, [arrival(0, "a"), arrival(1, "m", marker=True), arrival(2, "b")], NOW)
    assert closing is not None and closing.reason == sets.MARKER
    assert closing.objects == ("gs://b/run/a", "gs://b/run/b")  # b's notification came after the marker's


def test_a_quiet_period_closes_the_set_once_it_has_passed_since_the_last_arrival():
    rule = SetRule(quiet_seconds=60)
    two = [arrival(0, "a"), arrival(30, "b")]
    assert decide(rule, two, NOW + timedelta(seconds=89)) is None
    closing = decide(rule, two, NOW + timedelta(seconds=90))
    assert closing is not None and closing.reason == sets.QUIET and len(closing.members) == 2


def test_an_arrival_after_a_quiet_gap_proves_the_set_closed_before_it():
    closing = decide(SetRule(quiet_seconds=60), [arrival(0, "a"), arrival(61, "b")], NOW + timedelta(seconds=61))
    assert closing is not None and closing.reason == sets.QUIET and [m.digest for m in closing.members] == ["a"]


@pytest.mark.parametrize("late", [3601, 7200])
def test_past_the_deadline_an_unfinished_set_closes_incomplete(late: float):
    rule = SetRule(size=24, deadline_seconds=3600)
    arrivals = [arrival(0, "a"), arrival(10, "b")]
    assert decide(rule, arrivals, NOW + timedelta(seconds=3600)) is None
    closing = decide(rule, arrivals, NOW + timedelta(seconds=late))
    assert closing is not None and closing.reason == sets.DEADLINE and not closing.complete
    assert len(closing.objects) == 2


def test_an_arrival_past_the_deadline_is_not_in_the_incomplete_set():
    rule = SetRule(size=24, deadline_seconds=3600)
    closing = decide(rule, [arrival(0, "a"), arrival(4000, "z")], NOW + timedelta(seconds=4000))
    assert closing is not None and closing.reason == sets.DEADLINE and [m.digest for m in closing.members] == ["a"]


def test_no_arrival_is_no_set():
    assert decide(SetRule(size=1), [], NOW) is None


@pytest.mark.parametrize(
    ("name", "marker", "expected"),
    [("run/_SUCCESS", "_SUCCESS", True), ("run/a_SUCCESS", "_SUCCESS", False), ("run/done.ok", "*.ok", True)],
)
def test_the_marker_is_the_last_name_segment(name: str, marker: str, expected: bool):
    assert SetRule(marker=marker).is_marker(name) is expected


def test_a_set_is_collected_per_folder_and_its_id_names_the_tenant():
    assert sets.group_of("plates/p17/a01.csv") == "plates/p17"
    assert sets.group_of("top.csv") == ""
    assert sets.set_id("lab", "plates", "b", "p17", 2) != sets.set_id("other", "plates", "b", "p17", 2)


def test_a_stamp_reads_back_as_the_moment_it_was_made():
    moment = NOW + timedelta(microseconds=123)
    assert sets.parse_stamp(sets.stamp(moment)) == moment
