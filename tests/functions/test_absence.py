"""Absence declarations end to end through the functions: an arrival marks its window, the schedule tick records
and logs a window nothing arrived in, once, however many ticks and instances look."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest

from relay import lifecycle, naming, records, runtime
from relay.service import Relay
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore
from tests.functions.test_lifecycle_entry_points import message
from tests.functions.test_main import event, outcome_lines, post, upload
from tests.policies import policy

RESULTS = "gs://results/relay"
POLICY = policy(
    """
tenants:
  - name: lab
    triggers: [gs://relay-triggers/nightly/]
    expect:
      - id: hourly
        prefix: gs://relay-triggers/nightly/
        when: every 1h
      - id: other-folder
        prefix: gs://relay-triggers/nightly/other/
        when: every 1h
      - id: berlin
        prefix: gs://relay-triggers/nightly/
        when: by 13:00
        timezone: Europe/Berlin
"""
)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture(autouse=True)
def installed(relay: Relay, clock: Clock) -> Iterator[Relay]:
    governed = replace(relay, policy=POLICY, clock=clock)
    runtime.install(governed)
    yield governed
    runtime.install(None)


def arrive(store: MemoryBlobStore) -> None:
    generation = upload(store)
    assert post("on_object_finalized", event("storage_finalized", generation=str(generation))) == 200


def tick(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert post("on_schedule", message("9", {}, b"")) == 200
    return [line for line in outcome_lines(capsys.readouterr().out) if line["outcome"] == "absent"]


def absences(store: MemoryBlobStore) -> list[str]:
    return sorted(uri.removeprefix(f"{RESULTS}/") for uri in store.uris(f"{RESULTS}/{naming.ABSENCES}/"))


def test_an_arrival_is_what_its_windows_wait_for_and_nothing_fires_for_it(store, clock, capsys):
    arrive(store)  # at 12:00:00 UTC: the 12:00 hourly window; 13:00 in Berlin, so the next day's deadline
    launched = outcome_lines(capsys.readouterr().out)[-1]
    assert (launched["outcome"], launched["tenant"], launched["latency_ms"]) == ("launched", "lab", 2000)
    marks = sorted(store.uris(f"{RESULTS}/expectations/"))
    assert marks == [
        f"{RESULTS}/expectations/lab/berlin/2026-11-22T1300.json",
        f"{RESULTS}/expectations/lab/hourly/2026-11-21T1200.json",
    ]
    clock.now = NOW + timedelta(hours=1, minutes=1)  # past the hourly window's end and its grace
    lines = tick(capsys)
    # The hourly window the trigger landed in stays quiet; the folder that saw nothing fires, and so does the
    # Berlin deadline: an arrival at 13:00 sharp is the next day's, so the day that ended then had none.
    assert sorted((line["expectation"], line["window"], line["tenant"]) for line in lines) == [
        ("berlin", "2026-11-21T1300", "lab"),
        ("other-folder", "2026-11-21T1200", "lab"),
    ]
    assert absences(store) == [
        "absences/lab/berlin/2026-11-21T1300.json",
        "absences/lab/other-folder/2026-11-21T1200.json",
    ]


def test_a_missing_arrival_fires_once_across_ticks_and_instances(relay, store, clock, capsys):
    clock.now = NOW + timedelta(hours=1, minutes=1)
    first = tick(capsys)
    assert sorted((line["expectation"], line["window"]) for line in first) == [
        ("berlin", "2026-11-21T1300"),  # 12:00 UTC in November: that day's deadline passed with nothing
        ("hourly", "2026-11-21T1200"),
        ("other-folder", "2026-11-21T1200"),
    ]
    assert all(line["severity"] == "WARNING" for line in first)
    clock.now += timedelta(minutes=5)
    assert tick(capsys) == []  # the next tick: recorded already, no second alert
    other_instance = replace(runtime.current({}), clock=clock)
    assert lifecycle.reconcile(other_instance).lines == ()
    record = records.decode(store.read(f"{RESULTS}/absences/lab/hourly/2026-11-21T1200.json").data)
    assert record["state"] == "absent" and record["window_start"] == "2026-11-21T12:00:00.000Z"
    assert record["window_end"] == "2026-11-21T13:00:00.000Z"
    # The next hour closes empty too: that window is its own absence.
    clock.now += timedelta(hours=1)
    assert sorted(line["expectation"] for line in tick(capsys)) == ["hourly", "other-folder"]


def test_a_window_is_checked_only_after_its_grace(store, clock, capsys):
    clock.now = NOW + timedelta(hours=1, seconds=30)  # the 12:00 window closed 30 s ago: an arrival may be landing
    assert [line["window"] for line in tick(capsys) if line["expectation"] == "hourly"] == ["2026-11-21T1100"]
