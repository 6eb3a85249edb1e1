"""`relay dead-letters list | replay` on the real Pub/Sub emulator, with the subscriptions `make up` creates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import PubSubEmulator, create_topic
from devstack.pubsub import create_push_subscription, publish, subscriber_client, subscription_path
from devstack.stack import DEAD_LETTER
from tests.cli.support import Ran, run

pytestmark = pytest.mark.integration

PROJECT = "relay-local"
TRIGGERS = "relay-triggers"
FORWARDED = {"CloudPubSubDeadLetterSourceDeliveryCount": "15", "CloudPubSubDeadLetterSourceSubscription": "s"}


@pytest.fixture
def topics(emulator: PubSubEmulator) -> Iterator[str]:
    """The dead-letter topic and subscription as LocalStack makes them, and a pull subscription on the triggers."""
    host = emulator.host_port
    for topic in (DEAD_LETTER, TRIGGERS):
        create_topic(host, PROJECT, topic)
    create_push_subscription(host, PROJECT, DEAD_LETTER, topic=DEAD_LETTER, endpoint="")
    create_push_subscription(host, PROJECT, "replayed", topic=TRIGGERS, endpoint="")
    yield host
    with subscriber_client(host) as client:
        for name in (DEAD_LETTER, "replayed"):
            client.delete_subscription(subscription=subscription_path(PROJECT, name))


def relay(capsys: pytest.CaptureFixture[str], host: str, *argv: str) -> Ran:
    return run(capsys, list(argv), env={"PUBSUB_EMULATOR_HOST": host, "PUBSUB_PROJECT_ID": PROJECT})


def received(host: str, expected: int, timeout: float = 10.0) -> list[Any]:
    """Every message on the trigger topic's capture subscription, once `expected` have come."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    with subscriber_client(host) as client:
        path = subscription_path(PROJECT, "replayed")
        while len(messages) < expected and time.monotonic() < deadline:
            response = client.pull(subscription=path, max_messages=10, timeout=5)
            if response.received_messages:
                client.acknowledge(subscription=path, ack_ids=[r.ack_id for r in response.received_messages])
                messages.extend(r.message for r in response.received_messages)
    return messages


def test_list_shows_every_dead_letter_and_consumes_none(topics: str, capsys):
    notification = {"bucketId": "lab-data", "objectId": "assay/x.csv", "objectGeneration": "7", **FORWARDED}
    first = publish(topics, PROJECT, DEAD_LETTER, b"{}", notification)
    second = publish(topics, PROJECT, DEAD_LETTER, b'{"pipeline": "push"}', {"format": "json", **FORWARDED})
    for _ in range(2):  # the second listing sees what the first did: nothing was acknowledged
        ran = relay(capsys, topics, "dead-letters", "list", "--json")
        assert ran.code == 0, ran.err
        shown = {letter["id"]: letter for letter in ran.json()}
        assert set(shown) == {first, second}
        assert shown[first]["about"] == "gs://lab-data/assay/x.csv#7"
        assert shown[second]["about"] == 'inline json: {"pipeline": "push"}'
    text = relay(capsys, topics, "dead-letters", "list")
    assert text.out.splitlines()[0].split() == ["ID", "PUBLISHED", "ATTEMPTS", "EVENT"] and "15" in text.out


def test_replay_republishes_with_the_original_attributes_and_acknowledges_only_what_it_sent(topics: str, capsys):
    chosen = publish(topics, PROJECT, DEAD_LETTER, b"chosen", {"trigger_uri": "gs://t/a.json#1", **FORWARDED})
    left = publish(topics, PROJECT, DEAD_LETTER, b"left", {"format": "yaml", **FORWARDED})
    ran = relay(capsys, topics, "dead-letters", "replay", chosen, "--json")
    assert ran.code == 0, ran.err
    assert [line.split(" -> ")[0] for line in ran.json()["replayed"]] == [chosen]
    [message] = received(topics, 1)
    assert (message.data, dict(message.attributes)) == (b"chosen", {"trigger_uri": "gs://t/a.json#1"})
    remaining = relay(capsys, topics, "dead-letters", "list", "--json").json()
    assert [letter["id"] for letter in remaining] == [left]
    # --all takes the rest; then nothing is left.
    assert relay(capsys, topics, "dead-letters", "replay", "--all").code == 0
    [rest] = received(topics, 1)
    assert (rest.data, dict(rest.attributes)) == (b"left", {"format": "yaml"})
    assert relay(capsys, topics, "dead-letters", "list").out == (
        f"no dead letters in {subscription_path(PROJECT, DEAD_LETTER)}\n"
    )


def test_a_replay_that_cannot_publish_keeps_the_message(topics: str, capsys):
    kept = publish(topics, PROJECT, DEAD_LETTER, b"x", {"format": "json", **FORWARDED})
    ran = relay(capsys, topics, "dead-letters", "replay", "--all", "--topic", "no-such-topic")
    assert ran.code == 1
    assert "1 failed, 0 not found" in ran.err and f"failed {kept}:" in ran.err
    assert [letter["id"] for letter in relay(capsys, topics, "dead-letters", "list", "--json").json()] == [kept]
    missing = relay(capsys, topics, "dead-letters", "replay", "123456789")
    assert missing.code == 1 and "not found: 123456789" in missing.err
    assert [letter["id"] for letter in relay(capsys, topics, "dead-letters", "list", "--json").json()] == [kept]


def test_replay_needs_ids_or_all(topics: str, capsys):
    assert relay(capsys, topics, "dead-letters", "replay").code == 2
    assert relay(capsys, topics, "dead-letters", "replay", "1", "--all").code == 2
