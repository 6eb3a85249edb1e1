"""The outcome lines the metrics and alerts read: a run's end (whoever records it), a run past its expected time,
and the tenant of a delivery the service named none for."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from relay import lifecycle, logs, naming, records
from relay.events import parse_pubsub_event
from relay.observe import measured, tenant_of
from relay.outcome import Outcome
from relay.ports import RunState
from relay.results import record_result
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend
from tests.policies import policy

RESULTS = "gs://results/relay"
TOPIC = "projects/relay-demo/topics/relay-triggers"
POLICY = policy(
    f"""
tenants:
  - name: lab
    topics: [{TOPIC}]
    triggers: [gs://relay-triggers/lab/]
    expected_times: {{echo: 30m}}
"""
)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def launch(relay: Relay, key: str) -> dict[str, object]:
    body = json.dumps({"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": key}).encode()
    data = {"message": {"data": base64.b64encode(body).decode(), "attributes": {}, "messageId": key}}
    attributes = {"id": key, "type": "google.cloud.pubsub.topic.v1.messagePublished",
                  "source": f"//pubsub.googleapis.com/{TOPIC}", "time": "2026-11-21T11:59:59Z"}  # fmt: skip
    outcome = handle_delivery(relay, parse_pubsub_event(attributes, data))
    assert outcome.outcome == "launched" and outcome.tenant == "lab", outcome
    return records.decode(relay.store.read(naming.launch_record(RESULTS, f"lab--{key}")).data)


def test_a_run_s_own_result_logs_its_end_with_state_duration_and_lag(relay: Relay, capsys):
    logs.configure()
    governed = replace(relay, policy=POLICY)
    saved = launch(governed, "nightly")
    capsys.readouterr()
    finished = datetime.now(UTC) - timedelta(seconds=5)
    record = records.result_record(
        run_key="lab--nightly", pipeline="echo", backend="fake", run_id="run-1", succeeded=False, message="boom",
        outputs={}, metrics={}, started=finished - timedelta(minutes=2), finished=finished,
    )  # fmt: skip
    assert record_result(governed.store, None, RESULTS, record)
    [end] = lines(capsys)
    assert (end["outcome"], end["state"], end["tenant"], end["pipeline"]) == ("ended", "failed", "lab", "echo")
    assert end["duration_s"] == 120.0 and end["recorded_by"] == "run" and end["attempt"] == 1
    assert isinstance(end["lag_s"], float) and end["lag_s"] >= 5.0
    assert end["severity"] == "WARNING" and end["event_id"] == saved["trigger"]["event_id"]  # type: ignore[index]
    assert not record_result(governed.store, None, RESULTS, record)  # recorded already: no second line
    assert lines(capsys) == []


def test_a_run_going_past_its_pipeline_s_expected_time_is_stuck_each_tick(relay: Relay, backend: FakeBackend):
    governed = replace(relay, policy=POLICY)
    launch(governed, "nightly")
    backend.states["run-1"] = RunState("running", started_at=NOW)
    assert lifecycle.reconcile(replace(governed, clock=lambda: NOW + timedelta(minutes=29))).lines == ()
    later = replace(governed, clock=lambda: NOW + timedelta(minutes=31))
    [stuck] = lifecycle.reconcile(later).lines
    assert (stuck.outcome, stuck.tenant, stuck.run_key, stuck.expected_s, stuck.running_s) == (
        "stuck", "lab", "lab--nightly", 1800.0, 1860.0
    )  # fmt: skip
    assert stuck.severity == "WARNING"
    backend.states["run-1"] = RunState("succeeded", finished_at=NOW + timedelta(minutes=32))
    assert lifecycle.reconcile(replace(governed, clock=lambda: NOW + timedelta(minutes=33))).lines == ()


def test_a_delivery_the_service_named_no_tenant_for_gets_its_location_s_or_topic_s():
    rejected = Outcome("rejected", "bad", "e", "gs://relay-triggers/lab/x.json", "echo-abc", code="invalid_document")
    assert tenant_of(POLICY, rejected) == "lab"
    assert tenant_of(POLICY, replace(rejected, trigger_uri=f"{TOPIC}#12")) == "lab"
    assert tenant_of(POLICY, replace(rejected, trigger_uri="gs://elsewhere/x.json")) is None
    assert tenant_of(POLICY, replace(rejected, run_key="lab--mine", trigger_uri="gs://elsewhere/x")) == "lab"
    assert tenant_of(replace(POLICY, tenants=()), replace(rejected, run_key="lab--mine")) is None
    # Latency is a launch's only; a tenant the service named stays.
    assert measured(rejected, POLICY, now=NOW, event_time=NOW - timedelta(seconds=3)) == {"tenant": "lab"}
    assert measured(replace(rejected, tenant="other"), POLICY, now=NOW, event_time=None) == {}


def test_a_launch_s_latency_runs_from_the_event_s_time():
    launched = Outcome("launched", "ok", "e", "gs://relay-triggers/lab/x.json", "echo-abc", "run-1", "echo")
    assert measured(launched, POLICY, now=NOW, event_time=NOW - timedelta(milliseconds=1500)) == {
        "tenant": "lab",
        "latency_ms": 1500,
    }
    assert measured(launched, POLICY, now=NOW, event_time=None) == {"tenant": "lab"}
