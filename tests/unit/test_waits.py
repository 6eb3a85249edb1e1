"""Retry-After read once: a server's "wait this long" means the same to the function's backends and to the steps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipelines.steps.destinations.http import retry_after as step_retry_after
from relay.adapters.http import Response
from relay.adapters.http import retry_after as backend_retry_after
from relay.waits import retry_after

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("-3", 0.0),
        ("Sat, 21 Nov 2026 12:02:00 GMT", 120.0),
        ("Sat, 21 Nov 2026 12:02:00 -0000", 120.0),  # no zone given: UTC, not this machine's zone
        ("Sat, 21 Nov 2026 11:00:00 GMT", 0.0),
        ("inf", None),  # "forever" is no wait a caller can keep: its own default instead
        ("-inf", None),
        ("nan", None),  # not "no wait at all"
        ("1e400", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_a_retry_after_header_reads_the_same_for_the_steps_and_the_backends(value: str | None, seconds: float | None):
    assert retry_after(value, NOW) == seconds
    assert step_retry_after is retry_after
    headers = {} if value is None else {"retry-after": value}
    if not (value or "").endswith(("GMT", "-0000")):  # a date is read against the clock's own now
        assert backend_retry_after(Response(429, headers, b"")) == seconds


@pytest.mark.parametrize("header", ["inf", "nan", "1e400"])
def test_a_backend_that_asks_for_an_endless_or_no_wait_gets_the_default_pause(header: str):
    # A 429 saying "inf" paused the function for its longest pause, and "nan" for none at all: now the default.
    assert backend_retry_after(Response(429, {"retry-after": header}, b"")) is None


@pytest.mark.parametrize("delay", ["infs", "nans", "-5s"])
def test_a_retry_info_delay_reads_as_a_header_does(delay: str):
    body = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}
    expected = 0.0 if delay == "-5s" else None
    assert backend_retry_after(Response(429, {}, json.dumps(body).encode())) == expected
