"""What the functions launch is what a step verifies: a trigger's run and a rerun's attempt, with the parameters
the backend was given, each against its own launch record; with one parameter changed, neither."""

from __future__ import annotations

import json

import pytest

from pipelines.steps.errors import StepError
from pipelines.steps.launch import LaunchRecords, verify_launch
from relay import lifecycle
from relay.events import EventInfo, ObjectDelivery
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend

EVENT = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)


def test_a_triggered_run_and_its_rerun_each_verify_against_their_own_launch_record(relay: Relay, backend: FakeBackend):
    data = json.dumps({"pipeline": "echo", "run_key": "nightly", "parameters": {"message": "hi"}}).encode()
    generation = relay.store.write("gs://triggers/t.json", data)
    delivery = ObjectDelivery(EVENT, "triggers", "t.json", generation, len(data), "storage-event")
    assert handle_delivery(relay, delivery).outcome == "launched"
    attempt = lifecycle.rerun(relay, "nightly", force=True)
    assert attempt.run_key == "nightly-attempt-2"
    launches = LaunchRecords(relay.settings.results_uri, relay.store)
    first, second = (dict(request.parameters) for request in backend.launches)
    assert verify_launch(launches, "echo", first).run_key == "nightly"
    assert verify_launch(launches, "echo", second).run_key == "nightly-attempt-2"
    # The first run's message under the attempt's key: not what the attempt was launched with.
    with pytest.raises(StepError, match=r"parameters.message: expected string 'hi', found string 'hello'"):
        verify_launch(launches, "echo", {**second, "message": "hello"})
