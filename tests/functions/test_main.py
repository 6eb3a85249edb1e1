"""Real CloudEvents through functions-framework's app, with Relay's ports on in-memory fakes."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from functions_framework import create_app

from relay import naming, records, runtime
from relay.errors import BackendUnavailableError, LaunchRejectedError
from relay.outcome import Outcome, OutcomeKind
from relay.service import Relay
from tests.conftest import DATA
from tests.fakes import FakeBackend, MemoryBlobStore

MAIN = Path(__file__).parents[2] / "functions" / "main.py"
TRIGGER = {"pipeline": "echo", "parameters": {"message": "nightly"}, "labels": {"team": "assay"}}


@pytest.fixture(autouse=True)
def installed(relay: Relay) -> Iterator[Relay]:
    runtime.install(relay)
    yield relay
    runtime.install(None)


def client(target: str) -> Any:
    return create_app(target, str(MAIN), "cloudevent").test_client()


def event(name: str, **data_changes: Any) -> CloudEvent:
    sample = json.loads((DATA / "events" / f"{name}.json").read_text())
    data = copy.deepcopy(sample["data"])
    data.update(data_changes)
    return CloudEvent(sample["attributes"], data)


def post(target: str, cloud_event: CloudEvent, *, binary: bool = True) -> int:
    headers, body = (to_binary if binary else to_structured)(cloud_event)
    return int(client(target).post("/", headers=headers, data=body).status_code)


def upload(store: MemoryBlobStore, document: object = TRIGGER) -> int:
    return store.write("gs://relay-triggers/nightly/echo.json", json.dumps(document).encode())


def notification(generation: int) -> CloudEvent:
    sample = event("pubsub_notification")
    message = sample.data["message"]
    message["attributes"]["objectGeneration"] = str(generation)
    return sample


def launch_record(store: MemoryBlobStore, generation: int) -> dict[str, Any]:
    key = naming.derive_run_key("echo", f"gs://relay-triggers/nightly/echo.json#{generation}")
    return records.decode(store.read(naming.launch_record("gs://results/relay", key)).data)


def test_an_eventarc_storage_event_launches_one_run(store: MemoryBlobStore, backend: FakeBackend):
    generation = upload(store)
    assert post("on_object_finalized", event("storage_finalized", generation=str(generation))) == 200
    saved = launch_record(store, generation)
    assert saved["state"] == "launched" and saved["labels"] == {"team": "assay"}
    assert saved["trigger"]["event_id"] == "8104126312584742"
    assert [launch.parameters["message"] for launch in backend.launches] == ["nightly"]


def test_both_entry_points_for_one_object_give_one_run(store: MemoryBlobStore, backend: FakeBackend):
    generation = upload(store)
    assert post("on_message_published", notification(generation)) == 200
    assert post("on_object_finalized", event("storage_finalized", generation=str(generation)), binary=False) == 200
    assert post("on_message_published", notification(generation)) == 200
    assert len(backend.launches) == 1
    assert launch_record(store, generation)["trigger"]["via"] == "storage-notification"


def test_an_inline_message_launches_and_a_trigger_uri_reads_the_object(store: MemoryBlobStore, backend: FakeBackend):
    assert post("on_message_published", event("pubsub_inline")) == 200
    generation = upload(store)
    by_uri = event("pubsub_inline")
    by_uri.data["message"].update(
        attributes={"trigger_uri": "gs://relay-triggers/nightly/echo.json"},
        data=base64.b64encode(b"").decode(),
        messageId="77",
    )
    assert post("on_message_published", by_uri) == 200
    assert [launch.parameters["message"] for launch in backend.launches] == ["from a message", "nightly"]
    assert launch_record(store, generation)["trigger"]["via"] == "trigger-uri"


def test_a_transient_fault_answers_500_so_the_platform_redelivers(store: MemoryBlobStore, backend: FakeBackend):
    generation = upload(store)
    backend.failures.append(BackendUnavailableError("KFP answered 503"))
    storage_event = event("storage_finalized", generation=str(generation))
    assert post("on_object_finalized", storage_event) == 500
    assert post("on_object_finalized", storage_event) == 200
    assert len(backend.launches) == 1


def test_a_bad_trigger_is_acknowledged_after_its_rejection_is_recorded(store: MemoryBlobStore, backend: FakeBackend):
    generation = upload(store, {"pipeline": "echo", "parameters": {"message": 7}})
    assert post("on_object_finalized", event("storage_finalized", generation=str(generation))) == 200
    [uri] = store.uris("gs://results/relay/")
    assert uri.startswith("gs://results/relay/rejected/echo-") and backend.launches == []


def test_events_of_other_types_are_acknowledged_and_skipped(store: MemoryBlobStore):
    deleted = event("storage_finalized")
    deleted["type"] = "google.cloud.storage.object.v1.deleted"
    assert post("on_object_finalized", deleted) == 200
    assert store.uris("gs://results/") == []


def outcome_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_each_event_logs_one_json_outcome_line(store: MemoryBlobStore, capsys: pytest.CaptureFixture[str]):
    generation = upload(store, {"pipeline": "echo", "parameters": {"message": "hello"}})
    storage_event = event("storage_finalized", generation=str(generation))
    post("on_object_finalized", storage_event)
    post("on_object_finalized", storage_event)
    launched, duplicate = outcome_lines(capsys.readouterr().out)
    assert launched["severity"] == "INFO" and launched["outcome"] == "launched"
    assert launched["event_id"] == "8104126312584742" and launched["run_id"] == "run-1"
    assert launched["trigger_uri"] == "gs://relay-triggers/nightly/echo.json"
    assert launched["run_key"] == duplicate["run_key"] and duplicate["outcome"] == "duplicate"


def test_a_retried_event_logs_why(store: MemoryBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]):
    generation = upload(store)
    backend.failures.append(BackendUnavailableError("KFP answered 503"))
    post("on_object_finalized", event("storage_finalized", generation=str(generation)))
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "retried" and line["severity"] == "WARNING"
    assert line["message"] == "BackendUnavailableError: KFP answered 503"


@pytest.mark.parametrize(
    ("message", "reason", "severity"),
    [
        # A trigger_uri is what its publisher wrote (theirs to fix); an envelope no Pub/Sub sends is Relay's problem.
        ({"attributes": {"trigger_uri": "gs://Bad Bucket!/a.json"}}, "expected a bucket name", "WARNING"),
        ({"attributes": {"trigger_uri": "gs://relay-triggers/a.json#" + "9" * 30}}, "expected a generation", "WARNING"),
        ({"attributes": {"sender": "x"}, "data": 12}, "expected message data: base64 text, found number 12", "ERROR"),
        (
            {"attributes": {"sender": "x"}, "data": ["eyJ9"]},
            "expected message data: base64 text, found a list",
            "ERROR",
        ),
        ({"attributes": ["trigger_uri"]}, "expected message attributes: a mapping of strings, found a list", "ERROR"),
    ],
    ids=["bad-bucket", "generation-past-int64", "data-number", "data-list", "attributes-list"],
)
def test_a_malformed_message_is_acknowledged_with_one_outcome_line(
    store: MemoryBlobStore,
    backend: FakeBackend,
    capsys: pytest.CaptureFixture[str],
    message: dict[str, Any],
    reason: str,
    severity: str,
):
    malformed = event("pubsub_inline")
    malformed.data["message"] = {"messageId": "77", **message}
    assert post("on_message_published", malformed) == 200  # acknowledged: a redelivery cannot fix it
    [line] = outcome_lines(capsys.readouterr().out)
    assert (line["outcome"], line["severity"], line["event_id"]) == ("skipped", severity, "9921345002400")
    assert reason in line["message"], line["message"]
    assert store.uris("gs://results/") == [] and backend.launches == []


def test_a_trigger_s_own_problem_is_a_warning_in_the_log_and_the_record(
    store: MemoryBlobStore, capsys: pytest.CaptureFixture[str]
):
    generation = upload(store, {"pipeline": "echo", "parameters": {"message": 7}})
    post("on_object_finalized", event("storage_finalized", generation=str(generation)))
    [line] = outcome_lines(capsys.readouterr().out)
    assert (line["outcome"], line["severity"], line["code"]) == ("rejected", "WARNING", "invalid_parameters")
    [uri] = store.uris("gs://results/relay/rejected/")
    assert records.decode(store.read(uri).data)["severity"] == "WARNING"


def test_a_backend_refusing_what_relay_checked_is_an_error_in_the_log_and_the_record(
    store: MemoryBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
):
    generation = upload(store)
    backend.failures.append(LaunchRejectedError("KFP answered 400: the spec does not fit this cluster"))
    assert post("on_object_finalized", event("storage_finalized", generation=str(generation))) == 200
    [line] = outcome_lines(capsys.readouterr().out)
    assert (line["outcome"], line["severity"], line["code"]) == ("rejected", "ERROR", "launch_rejected")
    [uri] = store.uris("gs://results/relay/rejected/")
    assert records.decode(store.read(uri).data)["severity"] == "ERROR"


@pytest.mark.parametrize(
    ("kind", "code", "severity"),
    [
        ("rejected", "invalid_trigger", "WARNING"),
        ("rejected", "policy_denied", "WARNING"),
        ("rejected", "unknown_pipeline", "WARNING"),
        ("rejected", "trigger_not_found", "WARNING"),
        ("rejected", "launch_rejected", "ERROR"),
        ("dropped", "stale_event", "ERROR"),
        ("launched", None, "INFO"),
    ],
)
def test_severity_says_whose_problem_it_is(kind: OutcomeKind, code: str | None, severity: str):
    assert Outcome(kind, "", "1", "gs://relay-triggers/a.json", code=code).severity == severity


def test_an_event_s_trace_runs_through_its_outcome_line_its_records_and_its_run_s_labels(
    store: MemoryBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
):
    generation = upload(store)
    traced = event("storage_finalized", generation=str(generation))
    traced["traceparent"] = f"00-{'4b' * 16}-{'00f067aa0ba902b7'}-01"
    post("on_object_finalized", traced)
    (line,) = outcome_lines(capsys.readouterr().out)
    reference = launch_record(store, generation)["trigger"]
    span = reference["traceparent"].split("-")
    assert span[1] == "4b" * 16 and span[2] not in ("00f067aa0ba902b7", "0" * 16)  # Relay's span of the event's trace
    assert line["trace_id"] == "4b" * 16
    assert backend.launches[0].labels["relay-trace"] == "4b" * 16


def test_an_invalid_traceparent_is_replaced_never_copied(
    store: MemoryBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
):
    generation = upload(store)
    traced = event("storage_finalized", generation=str(generation))
    traced["traceparent"] = "00-ATTACKER-CHOSEN-01"
    post("on_object_finalized", traced)
    (line,) = outcome_lines(capsys.readouterr().out)
    reference = launch_record(store, generation)["trigger"]
    assert "ATTACKER" not in json.dumps(reference) and "ATTACKER" not in json.dumps(line)
    assert reference["traceparent"].split("-")[1] == line["trace_id"] == backend.launches[0].labels["relay-trace"]
