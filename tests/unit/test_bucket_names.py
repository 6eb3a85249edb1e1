"""One rule for a bucket name (relay.naming.is_bucket_name): the policy, the events, the CLI and devstack read it
alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import LocalStack
from relay.events import ObjectDelivery, Skip, parse_pubsub_event
from relay.naming import BUCKET_RULE
from relay.policy import PolicyError, parse_policy
from relaycli.errors import UsageError
from relaycli.trigger import bucket_name

PUBSUB = {
    "id": "msg-1",
    "type": "google.cloud.pubsub.topic.v1.messagePublished",
    "source": "//pubsub.googleapis.com/projects/proj-p/topics/relay-triggers",
    "time": "2026-11-21T12:00:00Z",
}
LONG_LABEL = "b" * 64  # one past Cloud Storage's 63 characters between dots
NAMES = [
    ("b", False),  # the events took one character as well, and no bucket has one
    ("b0", False),
    ("b00", True),
    ("b" * 63, True),
    ("b-_.0", True),
    ("-b0", False),
    ("b0_", False),
    ("B00", False),
    (".".join(["b" * 63] * 3) + "." + "b" * 30, True),  # 222 with dots
    (LONG_LABEL, False),
    (f"{LONG_LABEL}.lab", False),
    (f"lab.{LONG_LABEL}", False),
]


def policy_admits(bucket: str) -> bool:
    text = f"""
tenants:
  - name: lab
    topics: [projects/proj-p/topics/lab]
    routes:
      - {{id: r, bucket: {bucket}, prefix: in/, pipeline: push, parameters: {{sources: ["gs://d/x"]}}}}
notifications:
  - {{topic: projects/proj-p/topics/lab, buckets: [{bucket}]}}
"""
    try:
        parse_policy(text, "p.yaml")
    except PolicyError as refused:
        assert [str(problem).partition(", found")[0] for problem in refused.problems] == [
            f"tenants.lab.routes[0].bucket: expected {BUCKET_RULE}",
            f"notifications[0].buckets[0]: expected {BUCKET_RULE}",
        ]
        return False
    return True


def event_names_an_object(bucket: str) -> bool:
    message = {
        "subscription": "projects/proj-p/subscriptions/s",
        "message": {"data": "", "attributes": {"trigger_uri": f"gs://{bucket}/t.json"}, "messageId": "42"},
    }
    delivery = parse_pubsub_event(PUBSUB, message)
    assert isinstance(delivery, ObjectDelivery | Skip)
    return isinstance(delivery, ObjectDelivery)


def cli_takes(bucket: str) -> bool:
    try:
        bucket_name(bucket)
    except UsageError as refused:
        assert str(refused).startswith("--bucket: expected a bucket name: 3-63 lower-case letters"), str(refused)
        return False
    return True


def devstack_takes(bucket: str, tmp_path: Path) -> bool:
    try:
        LocalStack(tmp_path, trigger_bucket="relay-triggers", trigger_topic="relay-triggers", buckets=[bucket])
    except ValueError as refused:
        assert str(refused).startswith(f"bucket: expected {BUCKET_RULE}, found"), str(refused)
        return False
    return True


@pytest.mark.parametrize(("bucket", "valid"), NAMES)
def test_a_bucket_name_is_valid_to_the_policy_exactly_when_an_event_names_it(bucket: str, valid: bool, tmp_path: Path):
    # A label over 63 characters: the events skipped it, while the policy and `relay trigger` took it; one character:
    # the events took it, while the policy refused it.
    taken = (policy_admits(bucket), event_names_an_object(bucket), cli_takes(bucket), devstack_takes(bucket, tmp_path))
    assert taken == (valid, valid, valid, valid)
