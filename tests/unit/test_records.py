"""The records Relay writes under the results location, as a reader (`relay status`, the next run) sees them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from relay import records
from relay.errors import InvalidTriggerError, LaunchRejectedError, Problem, RelayError
from relay.events import EventInfo, InlineDelivery, ObjectDelivery

NOW = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
EVENT = EventInfo(id="event-7", type="google.cloud.storage.object.v1.finalized", source="//storage", time=NOW)
OBJECT = ObjectDelivery(event=EVENT, bucket="triggers", name="t.json", generation=5, size=10, via="storage-event")
INLINE = InlineDelivery(event=EVENT, topic="projects/proj-p/topics/tee", message_id="m-1", data=b"{}", format="json")


def claim(**changes: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "run_key": "echo-1",
        "pipeline": "echo",
        "backend": "kfp",
        "trigger": {"uri": "gs://triggers/t.json", "event_id": "event-7"},
        "parameters": {"message": "hi"},
        "labels": {"team": "assay"},
        "now": NOW,
        "lease_seconds": 90,
    }
    return records.claim_record(**{**arguments, **changes})  # type: ignore[arg-type]


def test_timestamps_are_utc_to_the_millisecond_with_a_z_and_read_back(monkeypatch: pytest.MonkeyPatch):
    paris = datetime(2026, 11, 21, 13, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    assert records.timestamp(paris) == "2026-11-21T12:00:00.123Z"
    with monkeypatch.context() as machine:  # whatever zone the machine writing the record is in
        machine.setenv("TZ", "America/New_York")
        time.tzset()
        assert records.timestamp(paris) == "2026-11-21T12:00:00.123Z"
    time.tzset()
    assert records.parse_timestamp("2026-11-21T12:00:00.123Z") == datetime(2026, 11, 21, 12, 0, 0, 123000, tzinfo=UTC)


def test_an_object_trigger_is_found_again_by_uri_generation_and_path():
    assert records.trigger_reference(OBJECT, 5) == {
        "uri": "gs://triggers/t.json",
        "event_id": "event-7",
        "event_type": "google.cloud.storage.object.v1.finalized",
        "event_time": "2026-11-21T12:00:00.123Z",
        "generation": 5,
        "via": "storage-event",
    }


def test_an_inline_trigger_is_found_again_by_its_message():
    untimed = InlineDelivery(
        event=EventInfo(id="e", type="t", source="s", time=None), topic="top", message_id="m-2", data=b"", format="yaml"
    )
    assert records.trigger_reference(untimed, None) == {
        "uri": "top#m-2",
        "event_id": "e",
        "event_type": "t",
        "event_time": None,
        "message_id": "m-2",
        "nonce_or_publish_time": None,
        "via": "pubsub-inline",
    }
    published = InlineDelivery(EVENT, "top", "m-2", b"", "json", nonce_or_publish_time="2026-11-21T12:00:00.1Z")
    assert records.trigger_reference(published, None)["nonce_or_publish_time"] == "2026-11-21T12:00:00.1Z"


def test_a_claim_says_who_claimed_what_until_when():
    record = claim(tenant="lab")
    assert record == {
        "state": "launching",
        "status": None,
        "message": "claimed by event event-7; submitting to kfp",
        "claim_id": record["claim_id"],
        "run_key": "echo-1",
        "tenant": "lab",
        "pipeline": "echo",
        "backend": "kfp",
        "run_id": None,
        "run_url": None,
        "trigger": {"uri": "gs://triggers/t.json", "event_id": "event-7"},
        "parameters": {"message": "hi"},
        "labels": {"team": "assay"},
        "outputs": {},
        "metrics": {},
        "claimed_at": "2026-11-21T12:00:00.123Z",
        "lease_expires_at": "2026-11-21T12:01:30.123Z",
    }
    assert claim()["tenant"] == ""


def test_each_claim_is_told_apart_from_a_retry_of_another():
    first, second = claim()["claim_id"], claim()["claim_id"]
    assert first != second
    assert isinstance(first, str) and len(first) == 32 and int(first, 16) >= 0


def test_a_claim_keeps_its_own_copies_of_what_it_was_given():
    parameters = {"message": "hi"}
    record = claim(parameters=parameters)
    parameters["message"] = "changed"
    assert record["parameters"] == {"message": "hi"}


def test_a_launched_record_keeps_the_claim_and_adds_the_run():
    claimed = claim()
    launched = records.launched_record(claimed, run_id="r-9", run_url="https://kfp/r-9", now=NOW + timedelta(seconds=2))
    assert launched == {
        **claimed,
        "state": "launched",
        "status": 202,
        "message": "run r-9 created on kfp",
        "run_id": "r-9",
        "run_url": "https://kfp/r-9",
        "launched_at": "2026-11-21T12:00:02.123Z",
    }
    assert claimed["state"] == "launching"


def test_a_rejection_lists_every_problem_with_its_code():
    error = InvalidTriggerError(
        "gs://triggers/t.json", [Problem("(document)", "at most 1048576 bytes", "1048577 bytes")], code="too_large"
    )
    record = records.rejection_record(
        run_key="trigger-1", pipeline=None, trigger={"uri": "u"}, error=error, now=NOW, tenant="lab"
    )
    assert record == {
        "state": "rejected",
        "status": 400,
        "message": str(error),
        "run_key": "trigger-1",
        "tenant": "lab",
        "pipeline": None,
        "trigger": {"uri": "u"},
        "severity": "WARNING",
        "error": {
            "code": "too_large",
            "message": str(error),
            "problems": [{"field": "(document)", "expected": "at most 1048576 bytes", "found": "1048577 bytes"}],
        },
        "outputs": {},
        "metrics": {},
        "rejected_at": "2026-11-21T12:00:00.123Z",
    }


def test_a_rejection_that_is_relays_fault_is_an_error_and_has_no_problems():
    error = LaunchRejectedError("the backend refused the spec")
    record = records.rejection_record(run_key="echo-1", pipeline="echo", trigger={}, error=error, now=NOW)
    assert record["severity"] == "ERROR"
    assert record["error"] == {"code": "launch_rejected", "message": "the backend refused the spec", "problems": []}


def test_a_rejection_for_an_error_without_a_code_is_a_plain_rejection():
    record = records.rejection_record(run_key="k", pipeline="p", trigger={}, error=RelayError("odd"), now=NOW)
    assert record["error"]["code"] == "rejected" and record["severity"] == "WARNING"


@pytest.mark.parametrize(
    ("record", "expired"),
    [
        ({"lease_expires_at": "2026-11-21T12:00:00.124Z"}, False),  # a millisecond left
        ({"lease_expires_at": "2026-11-21T12:00:00.123Z"}, True),  # the lease ends at that instant
        ({"lease_expires_at": "2026-11-21T12:00:00.122Z"}, True),
        ({}, True),  # a claim without a lease never blocks a takeover
        ({"lease_expires_at": 1}, True),
    ],
)
def test_a_lease_holds_until_its_instant(record: dict[str, object], expired: bool):
    assert records.lease_expired(record, NOW.replace(microsecond=123000)) is expired


def test_records_are_stable_one_line_json_objects():
    assert records.encode({"b": 1, "a": {"c": 2}}) == b'{"a": {"c": 2}, "b": 1}\n'
    assert records.decode(records.encode({"b": 1})) == {"b": 1}
    with pytest.raises(ValueError, match=r"^expected a JSON object record$"):
        records.decode(b"[1]")
    with pytest.raises(json.JSONDecodeError):
        records.decode(b"{")


def test_a_run_writes_how_it_ended():
    common = {
        "run_key": "echo-1",
        "pipeline": "echo",
        "backend": "kfp",
        "run_id": "r-9",
        "message": "done",
        "outputs": {"Output": "x"},
        "metrics": {"seconds": 3},
        "started": NOW,
        "finished": NOW + timedelta(minutes=1),
    }
    succeeded = records.result_record(succeeded=True, **common)  # type: ignore[arg-type]
    assert succeeded == {
        "state": "succeeded",
        "status": 200,
        "message": "done",
        "run_key": "echo-1",
        "pipeline": "echo",
        "backend": "kfp",
        "run_id": "r-9",
        "outputs": {"Output": "x"},
        "metrics": {"seconds": 3},
        "started_at": "2026-11-21T12:00:00.123Z",
        "finished_at": "2026-11-21T12:01:00.123Z",
    }
    failed = records.result_record(succeeded=False, **common)  # type: ignore[arg-type]
    assert (failed["state"], failed["status"]) == ("failed", 500)
    told = records.result_record(succeeded=False, status=409, **common)  # type: ignore[arg-type]
    assert (told["state"], told["status"]) == ("failed", 409)


LAUNCH = {"run_key": "echo-1", "pipeline": "echo", "backend": "kfp", "run_id": "r-9", "launched_at": "then"}


@pytest.mark.parametrize(("state", "status"), [("succeeded", 200), ("failed", 500), ("cancelled", 499)])
def test_a_run_that_ended_silently_is_recorded_from_its_launch(state: str, status: int):
    ended = records.ended_record(
        launch=LAUNCH, state=state, message="m", started=NOW, finished=NOW + timedelta(hours=1), recorded_by="reconcile"
    )
    assert ended == {
        "state": state,
        "status": status,
        "message": "m",
        "run_key": "echo-1",
        "pipeline": "echo",
        "backend": "kfp",
        "run_id": "r-9",
        "outputs": {},
        "metrics": {},
        "started_at": "2026-11-21T12:00:00.123Z",
        "finished_at": "2026-11-21T13:00:00.123Z",
        "recorded_by": "reconcile",
    }


def test_a_run_never_seen_starting_counts_from_its_launch():
    ended = records.ended_record(
        launch=LAUNCH, state="cancelled", message="m", started=None, finished=NOW, recorded_by="cancel"
    )
    assert ended["started_at"] == "then"


def test_a_rerun_links_to_the_first_run_and_the_one_before():
    assert records.attempt_link(first="echo-1", previous="echo-1-2", number=3) == {
        "attempt": 3,
        "attempt_of": "echo-1",
        "previous_attempt": "echo-1-2",
    }
