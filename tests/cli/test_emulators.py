"""`relay trigger`, `publish`, `status` and `runs` against the real fake-gcs-server and Pub/Sub emulator."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack import FakeGcsServer, PubSubEmulator, create_bucket, create_topic, emulator_available, fake_gcs_available
from devstack.gcs import storage_client
from devstack.pubsub import subscriber_client, subscription_path
from relay import actions, audit, naming
from relay.adapters.audited import AuditedStore
from relay.adapters.stores import results_store
from relay.events import PUBSUB_PUBLISHED, EventInfo, parse_pubsub_event, parse_storage_event
from relay.service import handle_delivery, parse_document, run_key_for
from relay.status import run_key_for_object
from relay.triggers import Format
from tests.cli.support import ECHO, Ran, drop, relay_on, run
from tests.conftest import CATALOG
from tests.fakes import MemoryBlobStore

pytestmark = pytest.mark.integration

PROJECT = "relay-local"
TRIGGERS = "cli-triggers"
RESULTS = "gs://cli-results/relay"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    missing = fake_gcs_available()
    if missing:
        pytest.fail(f"the integration tests need fake-gcs-server: {missing}")
    with FakeGcsServer(tmp_path_factory.mktemp("gcs")) as server:
        for bucket in (TRIGGERS, "cli-results"):
            create_bucket(server.url, bucket, PROJECT)
        yield server


@pytest.fixture(scope="module")
def pubsub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    missing = emulator_available()
    if missing:
        pytest.fail(f"the integration tests need the Pub/Sub emulator: {missing}")
    with PubSubEmulator(tmp_path_factory.mktemp("pubsub"), project=PROJECT) as emulator:
        yield emulator


@pytest.fixture
def storage_env(gcs: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    monkeypatch.setenv("RELAY_CATALOG_URI", str(CATALOG))
    monkeypatch.delenv("RELAY_RESULTS_URI", raising=False)
    return gcs.url


@pytest.fixture
def pubsub_env(pubsub: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host_port)
    monkeypatch.setenv("PUBSUB_PROJECT_ID", PROJECT)
    monkeypatch.setenv("RELAY_CATALOG_URI", str(CATALOG))
    return pubsub.host_port


def relay_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """`relay` with the process environment, as the console script gets it."""
    return run(capsys, list(argv))


def test_trigger_lands_in_the_bucket_under_the_run_key_relay_gives_it(
    storage_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    path = tmp_path / "nightly.yaml"
    path.write_text("pipeline: echo\nparameters:\n  message: hello\n  count: 2\n")
    ran = relay_cli(capsys, "trigger", str(path), "--bucket", TRIGGERS, "--name", "assay/nightly.yaml", "--json")
    assert ran.code == 0, ran.err
    shown = ran.json()
    blob = storage_client(storage_env, PROJECT).bucket(TRIGGERS).get_blob("assay/nightly.yaml")
    assert blob.generation == shown["generation"] and blob.content_type == "application/yaml"
    assert blob.download_as_bytes() == path.read_bytes()
    assert shown["uri"] == f"gs://{TRIGGERS}/assay/nightly.yaml"
    # The key the CLI printed is the one Relay's functions give the object's finalized event.
    store = results_store(RESULTS, str(tmp_path / "local"))
    assert shown["run_key"] == run_key_for_object(store, shown["uri"])
    relay = relay_on(store, RESULTS)
    event = {"id": "e1", "type": "google.cloud.storage.object.v1.finalized", "source": "s", "time": relay.clock()}
    data = {
        "bucket": TRIGGERS,
        "name": "assay/nightly.yaml",
        "generation": str(blob.generation),
        "size": str(blob.size),
    }
    outcome = handle_delivery(relay, parse_storage_event(event, data))
    assert (outcome.outcome, outcome.run_key) == ("launched", shown["run_key"])
    # ... and status and runs find it through the trigger URI, in a gs:// results location.
    status = relay_cli(capsys, "status", shown["uri"], "--results", RESULTS, "--json")
    assert status.code == 0, status.err
    assert (status.json()["run_key"], status.json()["state"]) == (shown["run_key"], "launched")
    assert status.json()["records"] == {"launch": naming.launch_record(RESULTS, shown["run_key"])}
    runs = relay_cli(capsys, "runs", "--results", RESULTS)
    assert shown["run_key"] in runs.out and "launched" in runs.out


def test_runs_lists_a_gcs_results_location_newest_first(storage_env: str, capsys, tmp_path: Path):
    store = results_store(RESULTS + "-listing", str(tmp_path / "local"))
    first = drop(relay_on(store, RESULTS + "-listing", datetime(2026, 1, 1, tzinfo=UTC)), ECHO, "first.json", TRIGGERS)
    second = drop(relay_on(store, RESULTS + "-listing"), {"pipeline": "echo"}, "second.json", TRIGGERS)
    ran = relay_cli(capsys, "runs", "--results", RESULTS + "-listing", "--json")
    assert [(run["run_key"], run["state"]) for run in ran.json()] == [
        (second.run_key, "rejected"),
        (first.run_key, "launched"),
    ]


def test_trigger_to_a_missing_bucket(storage_env: str, capsys, tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ECHO))
    ran = relay_cli(capsys, "trigger", str(path), "--bucket", "no-such-bucket")
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == "relay trigger: gs://no-such-bucket: expected an existing bucket, found none\n"


def pull_one(host_port: str, subscription: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    with subscriber_client(host_port) as subscriber:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
            if response.received_messages:
                [received] = response.received_messages
                subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
                return received.message
    raise AssertionError(f"no message on {subscription} after {timeout} s")


@pytest.fixture
def subscription(pubsub_env: str) -> Iterator[str]:
    """A pull subscription on the trigger topic, made before anything is published."""
    topic = create_topic(pubsub_env, PROJECT, TRIGGERS)
    path = subscription_path(PROJECT, "cli-pull")
    with subscriber_client(pubsub_env) as subscriber:
        subscriber.create_subscription(name=path, topic=topic)
    yield path
    with subscriber_client(pubsub_env) as subscriber:
        subscriber.delete_subscription(subscription=path)


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("t.json", json.dumps(ECHO), "json"),
        ("t.yaml", "pipeline: echo\nparameters: {message: hi}\nrun_key: nightly-2026-11-21\n", "yaml"),
    ],
    ids=["json", "yaml-with-run-key"],
)
def test_publish_sends_the_document_under_the_run_key_relay_gives_it(
    pubsub_env: str, subscription: str, capsys, tmp_path: Path, name: str, text: str, fmt: Format
):
    path = tmp_path / name
    path.write_text(text)
    ran = relay_cli(capsys, "publish", str(path), "--topic", TRIGGERS, "--json")
    assert ran.code == 0, ran.err
    shown = ran.json()
    topic = f"projects/{PROJECT}/topics/{TRIGGERS}"
    message = pull_one(pubsub_env, subscription)
    assert shown["topic"] == topic and shown["message_id"] == message.message_id
    nonce = message.attributes["nonce"]
    assert message.data == path.read_bytes() and dict(message.attributes) == {"format": fmt, "nonce": nonce}
    assert re.fullmatch(r"[0-9a-f]{16}", nonce), nonce
    identity = naming.message_identity(topic, message.message_id, nonce)
    assert shown["run_key"] == run_key_for(parse_document(message.data, fmt, topic), identity)
    if fmt == "yaml":
        assert shown["run_key"] == "nightly-2026-11-21"
    # The message as Eventarc hands it to on_message_published gets the same key from the service.
    attributes = {"id": "e", "type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/{topic}"}
    body = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "publishTime": "2026-11-29T21:58:21.511Z",  # the nonce, which publish knew, wins over it
        }
    }
    relay = relay_on(MemoryBlobStore(), "gs://results/relay")
    relay.store.write(str(CATALOG / "echo.yaml"), (CATALOG / "echo.yaml").read_bytes())
    outcome = handle_delivery(relay, parse_pubsub_event(attributes, body))
    assert (outcome.outcome, outcome.run_key) == ("launched", shown["run_key"])


def test_publish_scopes_a_run_key_to_the_tenant_of_its_topic(
    pubsub_env: str, subscription: str, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    topic = f"projects/{PROJECT}/topics/{TRIGGERS}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\ntenants:\n  - {{name: lab, topics: [{topic}]}}\n")
    monkeypatch.setenv("RELAY_POLICY_URI", str(policy))
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: echo\nparameters: {message: hi}\nrun_key: nightly\n")
    ran = relay_cli(capsys, "publish", str(path), "--topic", TRIGGERS, "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["run_key"] == "lab--nightly"
    message = pull_one(pubsub_env, subscription)
    # The functions, reading the same policy, give the message the same key.
    store = MemoryBlobStore()
    store.write(str(policy), policy.read_bytes())
    store.write(str(CATALOG / "echo.yaml"), (CATALOG / "echo.yaml").read_bytes())
    relay = relay_on(store, "gs://results/relay", policy_uri=str(policy))
    attributes = {"id": "e", "type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/{topic}"}
    data = base64.b64encode(message.data).decode()
    body = {"message": {"data": data, "attributes": dict(message.attributes), "messageId": message.message_id}}
    outcome = handle_delivery(relay, parse_pubsub_event(attributes, body))
    assert (outcome.outcome, outcome.run_key) == ("launched", "lab--nightly")


def test_publish_to_a_missing_topic(pubsub_env: str, capsys, tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ECHO))
    ran = relay_cli(capsys, "publish", str(path), "--topic", "no-such-topic")
    assert (ran.code, ran.out) == (1, "")
    assert (
        ran.err == f"relay publish: projects/{PROJECT}/topics/no-such-topic: expected an existing topic, found none\n"
    )


def test_publish_adds_attributes_and_sends_a_cancel_as_the_function_reads_it(
    pubsub_env: str, subscription: str, capsys, tmp_path: Path
):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ECHO))
    ran = relay_cli(capsys, "publish", str(path), "--topic", TRIGGERS, "--attribute", "team=assay", "--json")
    assert ran.code == 0, ran.err
    message = pull_one(pubsub_env, subscription)
    assert dict(message.attributes) == {"format": "json", "nonce": message.attributes["nonce"], "team": "assay"}
    topic = f"projects/{PROJECT}/topics/{TRIGGERS}"
    identity = naming.message_identity(topic, message.message_id, message.attributes["nonce"])
    assert ran.json()["run_key"] == run_key_for(parse_document(message.data, "json", topic), identity)
    cancel = ("--attribute", "action=cancel", "--attribute", "run_key=lab--nightly")
    ran = relay_cli(capsys, "publish", "--topic", TRIGGERS, *cancel)
    assert ran.code == 0, ran.err
    message = pull_one(pubsub_env, subscription)
    assert (message.data, dict(message.attributes)) == (b"", {"action": "cancel", "run_key": "lab--nightly"})
    event = EventInfo("e", PUBSUB_PUBLISHED, "s", datetime.now(UTC))
    wire = {"attributes": dict(message.attributes), "messageId": message.message_id}
    asked = actions.action_request(event, topic, wire)
    assert isinstance(asked, actions.ActionRequest) and (asked.action, asked.run_key) == ("cancel", "lab--nightly")
    assert ran.out.splitlines()[2] == "action      cancel lab--nightly"


def test_ls_and_cat_read_records_and_objects_from_the_storage_emulator(storage_env: str, capsys, tmp_path: Path):
    store = results_store(RESULTS + "-objects", str(tmp_path / "local"))
    assert isinstance(store, AuditedStore)
    key = drop(relay_on(store, RESULTS + "-objects"), ECHO, "objects.json", TRIGGERS).run_key or ""
    store.flush_audit()  # the launch's audit entries all written now, not whenever the flusher gets the CPU
    record = naming.launch_record(RESULTS + "-objects", key)
    batches = list(store.list(audit.location(RESULTS + "-objects") + "/"))  # one, or two if the flusher woke between
    assert batches
    listed = relay_cli(capsys, "ls", RESULTS + "-objects", "--json")
    assert listed.code == 0, listed.err
    expected = sorted((uri, len(store.read(uri).data)) for uri in (record, *batches))
    assert [(item["uri"], item["size"]) for item in listed.json()] == expected
    printed = relay_cli(capsys, "cat", record)
    assert (printed.code, printed.out.encode()) == (0, store.read(record).data)
    data = b"".join(b"%015d\n" % n for n in range(4096))
    store.write(f"gs://{TRIGGERS}/data/plates.txt", data)
    assert relay_cli(capsys, "cat", f"gs://{TRIGGERS}/data/plates.txt").out.encode() == data
    head = relay_cli(capsys, "cat", f"gs://{TRIGGERS}/data/plates.txt", "--bytes", "16")
    assert head.out == "000000000000000\n"
    missing = relay_cli(capsys, "ls", "gs://no-such-bucket/x/")
    assert missing.code == 1 and missing.err.startswith("relay ls: gs://no-such-bucket/x/: expected an existing bucket")
