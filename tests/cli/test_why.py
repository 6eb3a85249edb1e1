"""`relay why`: the story of each kind of delivery (launched, duplicate, rejected, skipped, queued, cancelled,
rerun), told from the records the functions' Relay writes and the outcome lines its entry points log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from relay import drain, lifecycle, logs
from relay.adapters.routing import RoutingBlobStore
from relay.events import EventInfo, InlineDelivery, ObjectDelivery
from relay.outcome import Outcome
from relay.service import Relay
from relay.trace import parse_traceparent
from tests.cli.support import ECHO, Ran, fields, relay_on, run
from tests.conftest import CATALOG
from tests.servers.cloud_logging import CloudLoggingServer

POLICY = """\
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    topics: [projects/proj-p/topics/lab]
    pipelines: [echo]
    caps: {max_in_flight: 1}
  - name: other
    triggers: [gs://triggers/other/]
    pipelines: [echo]
"""
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Cli = Callable[..., Ran]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "function-on_object_finalized.log"


@pytest.fixture
def relay(blobs: RoutingBlobStore, results: str, policy_file: Path) -> Relay:
    return relay_on(blobs, results, policy_uri=str(policy_file))


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], blobs: RoutingBlobStore, results: str, policy_file: Path, log_file: Path
) -> Cli:
    env = {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_POLICY_URI": str(policy_file),
        "RELAY_LOGS": str(log_file.parent),
    }

    def relay_command(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    return relay_command


@pytest.fixture
def deliver(relay: Relay, capsys: pytest.CaptureFixture[str], log_file: Path) -> Callable[..., Outcome]:
    """A trigger object lands (or is delivered again) and its event is handled as on_object_finalized handles it,
    its outcome line going to the function's log file."""
    logs.configure()

    def delivering(name: str, document: object = ECHO, *, again: int | None = None) -> Outcome:
        uri = f"gs://triggers/{name}"
        if again is None:
            data = document if isinstance(document, bytes) else json.dumps(document).encode()
            generation = relay.store.write(uri, data)
        else:
            generation = again
        size = relay.store.stat(uri, generation=generation).size
        event = EventInfo(f"evt-{name}-{generation}", "google.cloud.storage.object.v1.finalized", "s", relay.clock())
        event = EventInfo(event.id, event.type, event.source, event.time, parse_traceparent(TRACE))
        outcome = drain.deliver(relay, ObjectDelivery(event, "triggers", name, generation, size, "storage-event"))
        capsys.readouterr()
        logs.log_outcome(outcome, {"trace_id": TRACE.split("-")[1]})
        with log_file.open("a") as log:
            log.write(capsys.readouterr().out)
        return outcome

    return delivering


def steps(ran: Ran) -> list[tuple[str, str]]:
    assert ran.code == 0, ran.err
    return [(step["what"], step["detail"]) for step in ran.json()["steps"]]


def whats(ran: Ran) -> list[str]:
    return [what for what, _ in steps(ran)]


def test_a_launched_trigger_s_story(cli: Cli, deliver: Callable[..., Outcome]):
    outcome = deliver("lab/a.json")
    ran = cli("why", "gs://triggers/lab/a.json", "--json")
    # Under its tenant's cap a run goes through the queue even when there is room, and launches at once.
    assert whats(ran) == ["event", "tenant", "parameters", "policy", "queued", "claim", "launched", "launched"]
    told = dict(steps(ran))
    assert told["event"].startswith("gs://triggers/lab/a.json via storage-event, event evt-lab/a.json-")
    assert "trace 4bf92f3577b34da6a3ce929d0e0e4736" in told["event"]
    assert told["tenant"].startswith("lab, by the tenant whose trigger prefix holds the object")
    assert told["parameters"] == "the trigger asked for: count=2, message='hello'"
    assert told["policy"] == "allowed: pipeline echo and each parameter within tenant lab's rules"
    assert told["claim"].startswith("run key claimed from the queue by event evt-lab/a.json-")
    assert told["launched"].startswith("event evt-lab/a.json-")  # the last: the function's own line
    assert ran.json()["run_keys"] == [outcome.run_key]
    assert ran.json()["traces"] == [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "url": None}]
    text = cli("why", str(outcome.run_key))
    assert text.code == 0 and f"{outcome.run_key}  launched  tenant lab" in text.out
    assert "launched (log)" in text.out


def test_a_duplicate_delivery_is_told_as_the_function_answered_it(
    cli: Cli, deliver: Callable[..., Outcome], relay: Relay
):
    first = deliver("lab/a.json")
    generation = relay.store.stat("gs://triggers/lab/a.json").generation
    again = deliver("lab/a.json", again=generation)
    assert again.outcome == "duplicate"
    ran = cli("why", "gs://triggers/lab/a.json", "--json")
    lines = [step for step in ran.json()["steps"] if step["source"] == "log"]
    assert [line["what"] for line in lines] == ["launched", "duplicate"]
    assert f"already launched: {first.run_key}" in lines[1]["detail"]


def test_a_rejected_trigger_s_story_names_its_code_and_each_problem(cli: Cli, deliver: Callable[..., Outcome]):
    deliver("lab/bad.json", {"pipeline": "echo", "parameters": {"message": 7, "colour": "red"}})
    ran = cli("why", "gs://triggers/lab/bad.json", "--json")
    assert whats(ran) == ["event", "tenant", "rejected", "rejected"]
    told = dict(steps(ran))
    assert told["tenant"].startswith("lab, by")  # the rejection records no tenant: the policy decides, as it did
    assert told["rejected"].startswith("event ")  # the function's line last; the record's verdict before it
    verdict = steps(ran)[2][1]
    assert verdict.startswith("invalid_parameters: ")
    assert "parameters.message: expected" in verdict and "parameters.colour" in verdict


def test_a_skipped_object_s_story_says_why(cli: Cli, deliver: Callable[..., Outcome]):
    deliver("lab/notes.txt", b"not a trigger")
    ran = cli("why", "gs://triggers/lab/notes.txt", "--json")
    assert whats(ran) == ["event", "tenant", "skipped", "skipped"]
    assert steps(ran)[2][1].startswith("not_a_trigger: gs://triggers/lab/notes.txt: skipped: not a trigger file")


def test_a_queued_run_s_story_gives_its_place_and_why_it_waits(cli: Cli, deliver: Callable[..., Outcome]):
    deliver("lab/a.json")
    second = deliver("lab/b.json")
    assert second.outcome == "queued"
    ran = cli("why", "gs://triggers/lab/b.json", "--json")
    assert whats(ran) == ["event", "tenant", "parameters", "policy", "queued", "queued"]
    queued = steps(ran)[4][1]
    assert "waiting for room under tenants.lab.caps" in queued and "now position 1: tenant lab has 1 runs" in queued


def test_a_cancelled_run_and_its_rerun_say_who_asked(
    cli: Cli, deliver: Callable[..., Outcome], relay: Relay, capsys: pytest.CaptureFixture[str]
):
    key = str(deliver("other/a.json").run_key)
    lifecycle.cancel(relay, key, by="relay cancel")
    attempt = lifecycle.rerun(relay, key, by="relay rerun")
    capsys.readouterr()  # the run's `ended` line, which the cancel logged as the function would: not the command's
    ran = cli("why", key, "--json")
    told = [(step["what"], step["detail"]) for step in ran.json()["steps"] if step["source"] == "record"]
    assert [what for what, _ in told][-3:] == ["launched", "cancelled", "rerun"]
    by = {step["what"]: step["by"] for step in ran.json()["steps"]}
    assert by["cancelled"] == "relay cancel" and by["rerun"] == "relay rerun"
    assert told[-1][1] == f"attempt 2 as {attempt.run_key}, now launched"
    later = cli("why", attempt.run_key, "--json")
    assert f"attempt 2 of {key}" in dict(steps(later))["event"]
    assert dict(steps(later))["tenant"] == "other, by the run it repeats"


def test_a_message_id_is_followed_to_its_run(cli: Cli, relay: Relay):
    event = EventInfo("4921061845123456", "google.cloud.pubsub.topic.v1.messagePublished", "s", relay.clock())
    delivery = InlineDelivery(
        event, "projects/proj-p/topics/lab", "4921061845123456", json.dumps(ECHO).encode(), "json"
    )
    outcome = drain.deliver(relay, delivery)
    ran = cli("why", "4921061845123456", "--json")
    assert ran.json()["run_keys"] == [outcome.run_key]
    told = dict(steps(ran))
    assert "message 4921061845123456" in told["event"]
    assert told["tenant"] == "lab, by the tenant of the topic the message came on"


def test_with_a_tenant_scope_another_tenant_s_delivery_is_not_found(cli: Cli, deliver: Callable[..., Outcome]):
    key = str(deliver("other/a.json").run_key)
    deliver("lab/a.json")
    assert cli("why", key, "--tenant", "other", "--json").code == 0
    for asked in (key, "gs://triggers/other/a.json"):
        hidden = cli("why", asked, "--tenant", "lab")
        assert hidden.code == 1 and hidden.out == ""
        assert key not in hidden.err.replace(asked, "") and "other" not in hidden.err.replace(asked, "")
    unknown = cli("why", key, "--tenant", "nobody")
    assert unknown.code == 2 and "expected a tenant of the policy (lab, other)" in unknown.err


def test_what_names_nothing_relay_knows(cli: Cli):
    missing = cli("why", "gs://triggers/lab/never.json")
    assert missing.code == 1 and "expected records under" in missing.err
    wrong = cli("why", "Not A Key")
    assert wrong.code == 2 and "expected gs://bucket/object[#generation], a Pub/Sub message id" in wrong.err


def test_status_prints_the_trace_and_its_link_when_the_project_is_known(
    capsys: pytest.CaptureFixture[str], blobs: RoutingBlobStore, results: str, deliver: Callable[..., Outcome]
):
    key = str(deliver("lab/a.json").run_key)
    env = {"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(CATALOG)}
    plain = run(capsys, ["status", key, "--json"], env=env, store=blobs).json()
    assert plain["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and plain["trace_url"] is None
    linked = run(capsys, ["status", key], env={**env, "RELAY_VERTEX_PROJECT": "lab-prod"}, store=blobs)
    url = "https://console.cloud.google.com/traces/list?project=lab-prod&tid=4bf92f3577b34da6a3ce929d0e0e4736"
    assert fields(linked.out)["trace"] == [url]


def test_the_functions_lines_come_from_cloud_logging_with_a_project(
    capsys: pytest.CaptureFixture[str],
    blobs: RoutingBlobStore,
    results: str,
    policy_file: Path,
    deliver: Callable[..., Outcome],
):
    key = str(deliver("lab/a.json").run_key)
    line = {"outcome": "duplicate", "run_key": key, "event_id": "evt-again", "message": f"already launched: {key}"}
    other = {"outcome": "launched", "run_key": "echo-someone-else", "event_id": "evt-x", "message": "not this one"}
    with CloudLoggingServer(token_check=lambda token: token == "test-token") as logging_api:
        for payload in (line, other, {"message": "a line of no outcome", "run_key": key}):
            logging_api.add("lab-prod", "cloud_run_revision", {}, timestamp="2026-12-07T10:00:00Z", jsonPayload=payload)
        env = {
            "RELAY_RESULTS_URI": results,
            "RELAY_CATALOG_URI": str(CATALOG),
            "RELAY_POLICY_URI": str(policy_file),
            "RELAY_LOGGING_ENDPOINT": logging_api.url,
            "RELAY_AUTH": "static",
            "RELAY_STATIC_TOKEN": "test-token",
        }
        ran = run(capsys, ["why", key, "--project", "lab-prod", "--json"], env=env, store=blobs)
    assert ran.code == 0, ran.err
    lines = [step for step in ran.json()["steps"] if step["source"] == "log"]
    assert [(step["what"], step["time"]) for step in lines] == [("duplicate", "2026-12-07T10:00:00Z")]
    assert ran.json()["traces"][0]["url"].endswith("project=lab-prod&tid=4bf92f3577b34da6a3ce929d0e0e4736")
