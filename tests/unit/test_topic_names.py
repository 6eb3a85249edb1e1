"""One rule for a topic name (relay.naming.is_pubsub_name, Pub/Sub's own): the policy, the events, the CLI and devstack
read it alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import LocalStack
from relay import naming
from relay.events import InlineDelivery, Skip, parse_pubsub_event
from relay.policy import PolicyError, parse_policy
from relaycli.errors import UsageError
from relaycli.pubsub import subscription_path, topic_path

PROJECT = "proj-lab"
NAMES = [
    ("abc", True),  # 3 characters: the shortest
    ("a" * 255, True),  # the longest
    ("Ab-_.~+%9", True),  # every character Pub/Sub takes
    ("goo-triggers", True),
    ("Goog-triggers", True),  # only "goog" itself is Pub/Sub's
    ("ab", False),
    ("a" * 256, False),
    ("9abc", False),
    ("-abc", False),
    ("goog-triggers", False),
    ("goog", False),
    ("tr\u00efggers", False),  # a letter, but not an ASCII one
    ("relay\u0663", False),  # a digit, but not an ASCII one
    ("relay triggers", False),
    ("relay/triggers", False),
]


def policy_admits(topic: str) -> bool:
    try:
        parse_policy(f"tenants: [{{name: lab, topics: ['projects/{PROJECT}/topics/{topic}']}}]", "p.yaml")
    except PolicyError as refused:
        assert len(refused.problems) == 1
        assert refused.problems[0].startswith(f"tenants.lab.topics[0]: expected {naming.TOPIC_PATH_RULE}, found")
        return False
    return True


def event_names_a_topic(topic: str) -> bool:
    event = {
        "id": "msg-1",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}",
    }
    delivery = parse_pubsub_event(event, {"message": {"data": "", "messageId": "42"}})
    assert isinstance(delivery, InlineDelivery | Skip)
    return isinstance(delivery, InlineDelivery)


def cli_takes(topic: str) -> bool:
    taken = []
    for given in (topic, f"projects/{PROJECT}/topics/{topic}"):
        try:
            taken.append(topic_path(given, PROJECT, {}) == f"projects/{PROJECT}/topics/{topic}")
        except UsageError as refused:
            assert str(refused).startswith("--topic: expected "), str(refused)
            taken.append(False)
    assert taken[0] == taken[1]
    return taken[0]


def devstack_takes(topic: str, tmp_path: Path) -> bool:
    try:
        LocalStack(tmp_path, trigger_bucket="relay-triggers", trigger_topic=topic, emulators=False)
    except ValueError as refused:
        assert str(refused).startswith(f"topic: expected a topic name: {naming.PUBSUB_NAME_RULE}, found")
        return False
    return True


@pytest.mark.parametrize(("topic", "valid"), NAMES)
def test_a_topic_name_is_valid_to_the_policy_exactly_when_an_event_the_cli_and_devstack_take_it(
    topic: str, valid: bool, tmp_path: Path
):
    # The policy once took any projects/P/topics/T without a slash or a space: names Pub/Sub makes no topic of.
    taken = (policy_admits(topic), event_names_a_topic(topic), cli_takes(topic), devstack_takes(topic, tmp_path))
    assert taken == (valid, valid, valid, valid)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("projects/proj-lab/topics/relay", ("proj-lab", "topics", "relay")),
        ("projects/proj-lab/subscriptions/relay", ("proj-lab", "subscriptions", "relay")),
        ("projects/abcdef/topics/relay", ("abcdef", "topics", "relay")),  # a project id of 6: the shortest
        ("projects/a" + "b" * 28 + "c/topics/relay", ("a" + "b" * 28 + "c", "topics", "relay")),  # 30: the longest
        ("projects/abcde/topics/relay", None),
        ("projects/a" + "b" * 29 + "c/topics/relay", None),
        ("projects/abcde-/topics/relay", None),
        ("projects/1abcde/topics/relay", None),
        ("projects/proj-lab/topics/ab", None),
        ("projects/proj-lab/snapshots/relay", None),
        ("projects/proj-lab/topics/relay/", None),
        ("projects/proj-lab/topics/relay\n", None),
        ("//pubsub.googleapis.com/projects/proj-lab/topics/relay", None),
    ],
)
def test_a_pub_sub_path_is_split_only_when_google_cloud_could_hold_it(path: str, parts: tuple[str, str, str] | None):
    assert naming.split_pubsub_path(path) == parts
    assert naming.is_topic_path(path) is (parts is not None and parts[1] == "topics")


def test_the_rules_say_what_they_take():
    # Every message that refuses a name quotes these: a user reads them, so they are pinned as written.
    assert (
        naming.PUBSUB_NAME_RULE == "3-255 letters, digits, -, _, ., ~, + or %, starting with a letter and not with goog"
    )
    assert naming.PROJECT_ID_RULE == (
        "a project id: 6-30 lower-case letters, digits or -, starting with a letter, not ending in -"
    )
    assert naming.TOPIC_PATH_RULE.startswith(f"projects/PROJECT/topics/TOPIC ({naming.PROJECT_ID_RULE}; a topic")
    assert naming.TOPIC_PATH_RULE.endswith(f"; a topic name: {naming.PUBSUB_NAME_RULE})")


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("projects/proj-lab/topics/relay", "--subscription: expected projects/PROJECT/subscriptions/SUBSCRIPTION ("),
        ("projects/proj-lab/subscriptions/ab", "--subscription: expected projects/PROJECT/subscriptions/SUBSCRIPTION"),
        ("goog-dead", "--subscription: expected a subscription name (3-255 letters"),
    ],
)
def test_a_subscription_is_named_by_the_same_rule(given: str, error: str):
    assert subscription_path("relay-dead-letter", PROJECT, {}) == "projects/proj-lab/subscriptions/relay-dead-letter"
    with pytest.raises(UsageError) as refused:
        subscription_path(given, None, {})
    assert str(refused.value).startswith(error), str(refused.value)


def test_devstack_refuses_a_project_its_topics_could_not_be_in(tmp_path: Path):
    with pytest.raises(ValueError, match=f"^project: expected {naming.PROJECT_ID_RULE}, found 'lab'$"):
        LocalStack(tmp_path, project="lab", trigger_bucket="relay-triggers", trigger_topic="relay-triggers")
