"""The scheduled reconcile entry point, and cancel and rerun as messages on the trigger topic, through
functions-framework's app with Relay's ports on in-memory fakes."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from relay import naming, records, runtime
from relay.errors import BackendUnavailableError
from relay.ports import RunState
from relay.service import Relay
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.functions.test_main import event, outcome_lines, post
from tests.policies import policy

RESULTS = "gs://results/relay"
TOPIC = "projects/relay-demo/topics/relay-triggers"
POLICY = policy(
    f"""
tenants:
  - name: lab
    topics: [{TOPIC}]
  - name: other
    topics: [projects/relay-demo/topics/other]
"""
)


@pytest.fixture(autouse=True)
def installed(relay: Relay) -> Iterator[Relay]:
    governed = replace(relay, policy=POLICY)
    runtime.install(governed)
    yield governed
    runtime.install(None)


def message(message_id: str, attributes: dict[str, str], body: object = b"", topic: str = TOPIC) -> CloudEvent:
    sample = event("pubsub_inline")
    attributes_of_event = {**sample.get_attributes(), "id": message_id, "source": f"//pubsub.googleapis.com/{topic}"}
    data: dict[str, Any] = copy.deepcopy(sample.data)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    data["message"].update(attributes=attributes, data=base64.b64encode(raw).decode(), messageId=message_id)
    return CloudEvent(attributes_of_event, data)


def launch_nightly() -> str:
    trigger = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "nightly"}
    assert post("on_message_published", message("1", {}, trigger)) == 200
    return "lab--nightly"


def result(store: MemoryBlobStore, key: str) -> dict[str, Any] | None:
    uri = naming.result_record(RESULTS, key)
    return records.decode(store.read(uri).data) if uri in store.uris() else None


def test_cancel_on_the_topic_stops_the_tenants_run(store: MemoryBlobStore, backend: FakeBackend, capsys):
    key = launch_nightly()
    capsys.readouterr()
    assert post("on_message_published", message("2", {"action": "cancel", "run_key": "nightly"})) == 200
    assert backend.terminated == ["run-1"]
    ended = result(store, key)
    assert ended is not None and ended["state"] == "cancelled"
    assert ended["message"] == f"cancelled by message 2 on {TOPIC}"
    [end, line] = outcome_lines(capsys.readouterr().out)
    assert (end["outcome"], end["state"], end["tenant"], end["run_key"]) == ("ended", "cancelled", "lab", key)
    assert line["outcome"] == "cancelled" and line["run_key"] == key
    # Again: it has ended, so nothing changes, and the message is acknowledged.
    assert post("on_message_published", message("3", {"action": "cancel", "run_key": key})) == 200
    assert backend.terminated == ["run-1"]
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "skipped" and "already cancelled" in line["message"]


def test_another_tenants_topic_cannot_cancel(store: MemoryBlobStore, backend: FakeBackend, capsys):
    key = launch_nightly()
    capsys.readouterr()
    other = message("2", {"action": "cancel", "run_key": key}, topic="projects/relay-demo/topics/other")
    assert post("on_message_published", other) == 200  # refused and acknowledged
    assert backend.terminated == [] and result(store, key) is None
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "rejected" and "no run lab--nightly of tenant other" in line["message"]


def test_rerun_on_the_topic_starts_one_attempt_even_when_redelivered(store: MemoryBlobStore, backend: FakeBackend):
    key = launch_nightly()
    store.write(naming.result_record(RESULTS, key), records.encode({"state": "failed", "run_key": key}))
    rerun = message("5", {"action": "rerun", "run_key": "nightly"})
    assert post("on_message_published", rerun) == 200
    assert post("on_message_published", rerun) == 200  # Pub/Sub delivers at least once
    assert [launch.run_key for launch in backend.launches] == [key, f"{key}-attempt-2"]
    saved = records.decode(store.read(naming.launch_record(RESULTS, f"{key}-attempt-2")).data)
    assert saved["tenant"] == "lab" and saved["trigger"]["attempt_of"] == key


def test_a_malformed_action_is_logged_and_acknowledged(backend: FakeBackend, capsys):
    assert post("on_message_published", message("2", {"action": "stop", "run_key": "x"})) == 200
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "skipped" and line["severity"] == "ERROR"
    assert backend.launches == []


def test_the_schedule_tick_records_what_the_backend_says(store: MemoryBlobStore, backend: FakeBackend, capsys):
    key = launch_nightly()
    capsys.readouterr()
    backend.states["run-1"] = RunState("cancelled", "terminated in the UI")
    tick = message("9", {}, b"")  # Cloud Scheduler's message; its content does not matter
    assert post("on_schedule", tick) == 200
    ended = result(store, key)
    assert ended is not None and ended["state"] == "cancelled" and ended["recorded_by"] == "reconcile"
    [end, line] = outcome_lines(capsys.readouterr().out)
    assert (end["outcome"], end["recorded_by"], end["attempt"]) == ("ended", "reconcile", 1)
    assert (
        line["outcome"] == "reconciled"
        and line["message"]
        == "reconcile: 1 run(s) checked of 1 without a result: 1 result; "
        f"board: 3 page(s) written under {RESULTS}/board/"  # the operator's, and one for each of the two tenants
    )


def test_a_tick_the_backend_cut_short_says_where_and_why_and_is_acknowledged(backend: FakeBackend, capsys):
    key = launch_nightly()
    capsys.readouterr()
    backend.state_errors["run-1"] = BackendUnavailableError("the KFP API answered 503: Service Unavailable", status=503)
    assert post("on_schedule", message("9", {}, b"")) == 200  # the next tick does the same work: no redelivery
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "reconciled"
    assert line["message"] == (
        f"reconcile: 0 run(s) checked of 1 without a result: nothing to do; stopped at {key}: "
        "the KFP API answered 503: Service Unavailable; board: 3 page(s) written under gs://results/relay/board/"
    )


NOTIFY = "projects/relay-demo/topics/relay-notifications"


def test_a_runs_end_on_the_notify_topic_is_checked_then_recorded(store: MemoryBlobStore, backend: FakeBackend, capsys):
    key = launch_nightly()
    capsys.readouterr()
    ended = {"state": "succeeded", "run_key": key, "pipeline": "echo"}
    # Published while the backend says the run goes on (forged, or early): nothing is recorded, and it is acknowledged.
    assert post("on_run_ended", message("20", ended, ended, topic=NOTIFY)) == 200
    assert result(store, key) is None
    [line] = outcome_lines(capsys.readouterr().out)
    assert (line["outcome"], line["run_key"]) == ("reconciled", key) and "running" in line["message"]
    # Another record on the topic (its launch, say) is no end: skipped without a look.
    assert post("on_run_ended", message("21", {**ended, "state": "launched"}, ended, topic=NOTIFY)) == 200
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == "skipped" and line["message"] == "not a run's end"
    backend.states["run-1"] = RunState("succeeded", "done")
    assert post("on_run_ended", message("22", ended, ended, topic=NOTIFY)) == 200
    recorded = result(store, key)
    assert recorded is not None and recorded["state"] == "succeeded" and recorded["recorded_by"] == "reconcile"
    [end, line] = outcome_lines(capsys.readouterr().out)
    assert (end["outcome"], line["outcome"]) == ("ended", "reconciled") and line["message"].startswith(
        f"end of {key}: result"
    )
