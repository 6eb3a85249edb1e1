"""`relay backfill`: objects whose events were lost are delivered as the messages the deployment would have
received; the functions launch them under the keys their events would have had, and a second backfill, or a dry
run, delivers nothing. The end-to-end tests publish on the real Pub/Sub emulator and hand what it delivers to the
functions' own service."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import PubSubEmulator, create_topic
from devstack.pubsub import create_push_subscription, subscriber_client, subscription_path
from relay import naming
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.errors import BlobNotFoundError
from relay.events import PUBSUB_PUBLISHED, EventInfo, Message, ObjectDelivery, parse_pubsub_event
from relay.outcome import Outcome
from relay.ports import BlobInfo
from relay.service import Relay, handle_delivery
from tests.cli.support import ECHO, Ran, relay_on, run
from tests.conftest import CATALOG, NOW
from tests.fakes import MemoryBlobStore

PROJECT = "relay-local"
TOPIC = f"projects/{PROJECT}/topics/backfill-lab"
POLICY = f"""
notifications:
  - {{topic: {TOPIC}, buckets: [lab-data]}}
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    topics: [{TOPIC}]
    routes:
      - {{id: csv, bucket: lab-data, prefix: assay/, glob: "*.csv", pipeline: echo,
         parameters: {{message: "{{name}}", count: "{{size}}"}}}}
      - {{id: plates, bucket: lab-data, prefix: plates/, glob: "*.csv", pipeline: echo, set: {{size: 2}},
         parameters: {{message: "{{folder}}", count: "{{count}}"}}}}
"""
TRIGGER = json.dumps(ECHO).encode()


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def env(results: str, policy: str) -> dict[str, str]:
    return {"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(CATALOG), "RELAY_POLICY_URI": policy}


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], blobs: RoutingBlobStore) -> Callable[..., Ran]:
    def command(*argv: str, **extra: str) -> Ran:
        return run(capsys, list(argv), env={**env, **extra}, store=blobs)

    return command


@pytest.fixture
def functions(blobs: RoutingBlobStore, results: str, policy: str) -> Relay:
    """The functions' Relay on the same objects, records and policy as the command."""
    return relay_on(blobs, results, at=NOW, policy_uri=policy)


def storage_event(relay: Relay, uri: str, generation: int) -> str | None:
    """The run key the object's own storage event gets (the event that was lost, or one that was not)."""
    bucket, name = naming.split_gs_uri(uri)
    event = EventInfo(id=f"evt-{name}", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
    return handle_delivery(
        relay, ObjectDelivery(event, bucket, name, generation, len(TRIGGER), "storage-event")
    ).run_key


@pytest.fixture
def uploaded(gcs: MemoryBlobStore, functions: Relay) -> dict[str, int]:
    """Two trigger files and a routed data file whose events were lost, and one trigger file whose event came."""
    objects = {
        "gs://triggers/lab/a.json": gcs.put("gs://triggers/lab/a.json", TRIGGER),
        "gs://triggers/lab/b.json": gcs.put("gs://triggers/lab/b.json", json.dumps({**ECHO, "run_key": "b"}).encode()),
        "gs://lab-data/assay/x.csv": gcs.put("gs://lab-data/assay/x.csv", b"a,b\n1,2\n"),
        "gs://triggers/lab/seen.json": gcs.put("gs://triggers/lab/seen.json", TRIGGER),
        "gs://triggers/elsewhere.json": gcs.put("gs://triggers/elsewhere.json", TRIGGER),  # no tenant's
    }
    storage_event(functions, "gs://triggers/lab/seen.json", objects["gs://triggers/lab/seen.json"])
    return objects


def test_a_dry_run_lists_what_it_would_deliver_and_what_is_recorded_and_writes_nothing(
    cli: Callable[..., Ran], uploaded: dict[str, int], gcs: MemoryBlobStore, results: str
):
    before = sorted(p.relative_to(results) for p in Path(results).rglob("*.json"))
    ran = cli("backfill", "gs://triggers/", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    shown = ran.json()
    assert shown["dry_run"] is True and shown["more"] is False
    would = {row["uri"]: row for row in shown["delivered"]}
    assert sorted(would) == ["gs://triggers/lab/a.json", "gs://triggers/lab/b.json"]
    assert would["gs://triggers/lab/b.json"]["run_key"] == "lab--b"
    assert would["gs://triggers/lab/a.json"]["generation"] == uploaded["gs://triggers/lab/a.json"]
    assert (would["gs://triggers/lab/a.json"]["via"], would["gs://triggers/lab/a.json"]["topic"]) == (
        "trigger-uri",
        TOPIC,
    )
    assert [(row["uri"], row["recorded"]) for row in shown["recorded"]] == [("gs://triggers/lab/seen.json", "launched")]
    assert sorted(p.relative_to(results) for p in Path(results).rglob("*.json")) == before
    text = cli("backfill", "gs://lab-data/assay/", "--dry-run")
    assert text.code == 0, text.err
    assert text.out.splitlines()[0].split() == ["ACTION", "OBJECT", "AS", "RUN", "KEY"]
    assert "would deliver  gs://lab-data/assay/x.csv#" in text.out and "route lab/csv" in text.out
    assert "would deliver 1 object, 0 recorded already, under gs://lab-data/assay/" in text.out
    limited = cli("backfill", "gs://triggers/", "--dry-run", "--limit", "1", "--json").json()
    assert len(limited["delivered"]) == 1 and limited["more"] is True


def test_since_keeps_only_objects_changed_since_then(cli: Callable[..., Ran], uploaded: dict[str, int]):
    # The in-memory store knows no update times: an object of unknown age is never shown to be recent.
    assert cli("backfill", "gs://triggers/", "--dry-run", "--since", "1h", "--json").json()["delivered"] == []


class Vanishing(RoutingBlobStore):
    """The shared stores, where one object is deleted between the listing and the stat."""

    def __init__(self, gcs: MemoryBlobStore, results: str, gone: str) -> None:
        super().__init__(gcs, LocalBlobStore(results))
        self.gone = gone

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        if uri == self.gone:
            raise BlobNotFoundError(uri)
        return super().stat(uri, generation=generation)


def test_an_object_deleted_since_the_listing_is_left_out(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    gcs: MemoryBlobStore,
    results: str,
    uploaded: dict[str, int],
):
    store = Vanishing(gcs, results, "gs://triggers/lab/a.json")
    ran = run(capsys, ["backfill", "gs://triggers/", "--dry-run", "--json"], env=env, store=store)
    assert [row["uri"] for row in ran.json()["delivered"]] == ["gs://triggers/lab/b.json"]


def notified(relay: Relay, name: str, generation: int) -> Outcome:
    """The functions' outcome of the storage notification of gs://lab-data/`name` (an event that did come)."""
    event = EventInfo(id=f"m-{name}", type=PUBSUB_PUBLISHED, source=f"//pubsub.googleapis.com/{TOPIC}", time=NOW)
    origin = Message(TOPIC, f"m-{name}")
    return handle_delivery(
        relay, ObjectDelivery(event, "lab-data", name, generation, None, "storage-notification", origin)
    )


def test_a_set_routes_objects_in_a_set_are_recorded_as_collected_and_never_delivered_again(
    cli: Callable[..., Ran], gcs: MemoryBlobStore, functions: Relay
):
    first = gcs.put("gs://lab-data/plates/p1/a.csv", b"a\n1\n")
    assert notified(functions, "plates/p1/a.csv", first).outcome == "collected"  # the open set holds it
    second = gcs.put("gs://lab-data/plates/p1/b.csv", b"b\n2\n")  # its notification was lost
    shown = cli("backfill", "gs://lab-data/plates/", "--dry-run", "--json").json()
    assert [(row["uri"], row["recorded"]) for row in shown["recorded"]] == [
        ("gs://lab-data/plates/p1/a.csv", "collected")
    ]
    assert [row["uri"] for row in shown["delivered"]] == ["gs://lab-data/plates/p1/b.csv"]
    launched = notified(functions, "plates/p1/b.csv", second)  # it came after all: the set of two launches
    assert launched.outcome == "launched"
    # The set's objects have no record of their own (the run is the set's): delivered again they would be
    # duplicates, or start the folder's next set. Backfill asks the sets and leaves them alone.
    again = cli("backfill", "gs://lab-data/plates/", "--dry-run", "--json").json()
    assert again["delivered"] == [] and [row["recorded"] for row in again["recorded"]] == ["collected", "collected"]
    text = cli("backfill", "gs://lab-data/plates/", "--dry-run")
    assert "recorded: collected" in text.out, text.out
    assert "would deliver 0 objects, 2 recorded already, under gs://lab-data/plates/" in text.out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["gs://triggers/", "--topic", "t"], "--topic: expected none with a policy"),
        (["triggers/lab/"], "URI: expected gs://bucket/prefix, found 'triggers/lab/'"),
        (["gs://triggers/", "--tenant", "other"], "--tenant: expected a tenant of the policy (lab), found 'other'"),
    ],
)
def test_usage_errors_say_what_was_expected(cli: Callable[..., Ran], argv: list[str], said: str):
    ran = cli("backfill", *argv, "--dry-run")
    assert ran.code == 2 and said in ran.err, ran.err


def test_without_a_policy_it_needs_the_trigger_topic(capsys: pytest.CaptureFixture[str], results: str):
    ran = run(capsys, ["backfill", "gs://triggers/", "--dry-run"], env={"RELAY_RESULTS_URI": results})
    assert ran.code == 2 and "--topic: expected the deployment's trigger topic (no policy names one)" in ran.err


# -- end to end, on the Pub/Sub emulator -----------------------------------------------------------------------


@pytest.fixture
def pubsub(emulator: PubSubEmulator) -> Iterator[str]:
    """The tenant's topic, with a pull subscription standing in for the push to on_message_published."""
    host = emulator.host_port
    create_topic(host, PROJECT, TOPIC.rsplit("/", 1)[1])
    create_push_subscription(host, PROJECT, "backfilled", topic=TOPIC.rsplit("/", 1)[1], endpoint="")
    yield host
    with subscriber_client(host) as client:
        client.delete_subscription(subscription=subscription_path(PROJECT, "backfilled"))


def pulled(host: str, expected: int, timeout: float = 10.0) -> list[Any]:
    """The messages on the subscription once `expected` have come (or the timeout passed), acknowledged."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    with subscriber_client(host) as client:
        path = subscription_path(PROJECT, "backfilled")
        while len(messages) < expected and time.monotonic() < deadline:
            response = client.pull(subscription=path, max_messages=10, timeout=5)
            if response.received_messages:
                client.acknowledge(subscription=path, ack_ids=[r.ack_id for r in response.received_messages])
                messages.extend(r.message for r in response.received_messages)
    return messages


def push(relay: Relay, message: Any) -> str | None:
    """A pulled message as the push subscription hands it to on_message_published, handled by the functions."""
    published = message.publish_time.isoformat()
    cloud_event = {"id": message.message_id, "type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/{TOPIC}"}
    body = {
        "messageId": message.message_id,
        "publishTime": published,
        "attributes": dict(message.attributes),
        "data": base64.b64encode(message.data).decode(),
    }
    outcome = handle_delivery(relay, parse_pubsub_event({**cloud_event, "time": NOW}, {"message": body}))
    assert outcome.outcome == "launched", outcome
    return outcome.run_key


@pytest.mark.integration
def test_lost_events_are_delivered_once_under_their_events_keys(
    cli: Callable[..., Ran],
    pubsub: str,
    uploaded: dict[str, int],
    functions: Relay,
    blobs: RoutingBlobStore,
    policy: str,
    tmp_path: Path,
):
    emulated = {"PUBSUB_EMULATOR_HOST": pubsub, "PUBSUB_PROJECT_ID": PROJECT}
    assert cli("backfill", "gs://triggers/", "--dry-run", **emulated).code == 0
    first = [cli("backfill", uri, "--json", **emulated) for uri in ("gs://triggers/", "gs://lab-data/")]
    assert all(ran.code == 0 for ran in first), [ran.err for ran in first]
    keys = {row["uri"]: row["run_key"] for ran in first for row in ran.json()["delivered"]}
    assert sorted(keys) == ["gs://lab-data/assay/x.csv", "gs://triggers/lab/a.json", "gs://triggers/lab/b.json"]
    messages = pulled(pubsub, 3)
    assert len(messages) == 3  # the dry run published nothing
    launched = sorted(str(push(functions, message)) for message in messages)
    assert launched == sorted(keys.values())
    # The keys the lost events would have given: the trigger files' storage events, on records of their own.
    (tmp_path / "by-event").mkdir()
    by_event = relay_on(blobs, str(tmp_path / "by-event"), at=NOW, policy_uri=policy)
    for uri in ("gs://triggers/lab/a.json", "gs://triggers/lab/b.json"):
        assert storage_event(by_event, uri, uploaded[uri]) == keys[uri]
    generation = uploaded["gs://lab-data/assay/x.csv"]
    routed = naming.derive_run_key("echo", naming.object_identity("lab-data", "assay/x.csv", generation))
    assert keys["gs://lab-data/assay/x.csv"] == routed
    # Twice launches nothing new: every covered object has its record now.
    again = cli("backfill", "gs://triggers/", "--json", **emulated).json()
    assert again["delivered"] == [] and len(again["recorded"]) == 3
    assert cli("backfill", "gs://lab-data/", "--json", **emulated).json()["delivered"] == []
    assert pulled(pubsub, 1, timeout=3) == []
