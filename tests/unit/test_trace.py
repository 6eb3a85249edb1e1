"""The W3C trace context Relay takes from an event, or makes, and where it writes it."""

from __future__ import annotations

import pytest

from relay import labels
from relay.trace import (
    SPAN_FIELD,
    TRACE_FIELD,
    Trace,
    console_url,
    incoming,
    log_fields,
    new_trace,
    parse_traceparent,
    project_of,
    span_for,
    trace_id_of,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT}-01"


def test_a_valid_traceparent_is_read_whole():
    assert parse_traceparent(VALID) == Trace(TRACE_ID, PARENT, 1)
    assert parse_traceparent(VALID).traceparent == VALID
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT}-00").sampled is False


def test_a_later_version_is_read_for_its_first_four_fields():
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT}-01-what-comes-later") == Trace(TRACE_ID, PARENT, 1)


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "",
        f"ff-{TRACE_ID}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE_ID}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID.upper()}-{PARENT}-01",  # lower-case hex only
        f"00-{TRACE_ID[:-1]}-{PARENT}-01",  # a trace id of 31
        f"00-{TRACE_ID}0-{PARENT}-01",  # or 33
        f"00-{TRACE_ID}-{PARENT[:-1]}-01",  # a parent id of 15
        f"00-{TRACE_ID}-{PARENT}-1",  # flags of one digit
        f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # an all-zero parent id
        f"00-{TRACE_ID}-{PARENT}-0g",  # not hex
        f" {VALID}",
        f"{VALID}\n",
        f"0x-{TRACE_ID}-{PARENT}-01",
        f"01-{TRACE_ID}-{PARENT}-01" + "-x" * 300,  # longer than any header a publisher should send
        f"00_{TRACE_ID}_{PARENT}_01",
    ],
)
def test_anything_else_is_no_trace_context(text: object):
    assert parse_traceparent(text) is None


def test_the_cloudevent_s_own_trace_wins_over_the_message_s():
    other = f"00-{'a' * 32}-{'b' * 16}-01"
    assert incoming({"traceparent": VALID}, {"googclient_traceparent": other}) == parse_traceparent(VALID)
    assert incoming({}, {"googclient_traceparent": other, "traceparent": VALID}) == parse_traceparent(other)
    assert incoming({}, {"traceparent": VALID}) == parse_traceparent(VALID)
    assert incoming({"traceparent": "junk"}, {"traceparent": "junk"}) is None


def test_relay_s_span_is_a_child_of_the_event_s_or_the_root_of_a_new_trace():
    parent = parse_traceparent(VALID)
    span = span_for(parent)
    assert span.trace_id == TRACE_ID and span.span_id != PARENT and span.flags == 1
    fresh = span_for(None)
    assert parse_traceparent(fresh.traceparent) == fresh and fresh.sampled
    assert new_trace().trace_id != new_trace().trace_id


def test_a_trace_id_is_a_label_value_vertex_takes():
    assert labels.VALUE.match(new_trace().trace_id)


def test_log_fields_name_the_project_s_trace_when_the_project_is_known():
    span = Trace(TRACE_ID, PARENT, 1)
    assert log_fields(span, "lab-prod") == {
        "trace_id": TRACE_ID,
        TRACE_FIELD: f"projects/lab-prod/traces/{TRACE_ID}",
        SPAN_FIELD: PARENT,
        "logging.googleapis.com/trace_sampled": True,
    }
    assert log_fields(span, "") == {"trace_id": TRACE_ID}
    assert log_fields(None, "lab-prod") == {}


def test_a_record_s_trace_id_and_its_console_link():
    assert trace_id_of({"traceparent": VALID}) == TRACE_ID
    assert trace_id_of({"traceparent": "00-junk"}) == "" and trace_id_of({}) == ""
    assert console_url("lab-prod", TRACE_ID) == (
        f"https://console.cloud.google.com/traces/list?project=lab-prod&tid={TRACE_ID}"
    )
    assert console_url("", TRACE_ID) == "" and console_url("lab-prod", "nope") == ""


def test_the_project_a_source_names():
    assert project_of("//pubsub.googleapis.com/projects/lab-prod/topics/relay-triggers") == "lab-prod"
    assert project_of("//storage.googleapis.com/projects/_/buckets/relay-triggers") == ""
