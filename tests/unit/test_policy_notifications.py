"""The policy's `notifications`: which topics the deployment wired to which buckets' storage notifications."""

from __future__ import annotations

import pytest

from relay.naming import BUCKET_RULE, TOPIC_PATH_RULE
from relay.policy import Notifications, PolicyError, parse_policy, wired_buckets

TENANTS = """
tenants:
  - {name: assay, topics: [projects/proj-p/topics/assay]}
  - {name: imaging, topics: [projects/proj-p/topics/imaging]}
"""


def refused(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return list(caught.value.problems)


def test_a_topic_carries_the_notifications_of_the_buckets_listed_for_it_and_no_other():
    policy = parse_policy(
        TENANTS
        + """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [triggers, assay-data]}
  - {topic: projects/proj-p/topics/imaging, buckets: [imaging-data]}
""",
        "p.yaml",
    )
    assert policy.notifications == (
        Notifications("projects/proj-p/topics/assay", ("triggers", "assay-data")),
        Notifications("projects/proj-p/topics/imaging", ("imaging-data",)),
    )
    assert wired_buckets(policy, "projects/proj-p/topics/assay") == ("triggers", "assay-data")
    assert wired_buckets(policy, "projects/proj-p/topics/other") == ()
    assert parse_policy(TENANTS, "p.yaml").notifications == ()  # none wired: every notification is refused


def test_every_problem_of_a_notifications_list_is_named_at_once():
    text = (
        TENANTS
        + """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [Lab Data, triggers], prefix: x/}
  - {topic: topics/imaging, buckets: []}
  - {topic: projects/proj-p/topics/nobody, buckets: [nobody-data]}
  - {topic: projects/proj-p/topics/assay, buckets: triggers}
  - just-a-bucket
"""
    )
    assert refused(text) == [
        "notifications[0].prefix: unknown key (expected one of topic, buckets)",
        f"notifications[0].buckets[0]: expected {BUCKET_RULE}, found string 'Lab Data'",
        f"notifications[1].topic: expected {TOPIC_PATH_RULE}, found string 'topics/imaging'",
        "notifications[1].buckets: expected a list of the bucket names whose notifications reach the topic, "
        "found a list of 0",
        "notifications[3].buckets: expected a list, found string 'triggers'",
        "notifications[4]: expected a mapping, found string 'just-a-bucket'",
        f"notifications[4].topic: expected {TOPIC_PATH_RULE}, found null",
        "notifications[4].buckets: expected a list of the bucket names whose notifications reach the topic, found null",
        "notifications: the topic projects/proj-p/topics/assay is listed twice",
        "notifications[2].topic: expected a topic of a tenant (tenants[].topics), found projects/proj-p/topics/nobody",
    ]
    assert refused("notifications: {topic: projects/proj-p/topics/assay}") == [
        "notifications: expected a list, found a mapping of 1"
    ]
