"""The policy's `notifications`: which topics the deployment wired to which buckets' storage notifications."""

from __future__ import annotations

import pytest

from relay.policy import Notifications, PolicyError, parse_policy, wired_buckets

TENANTS = """
tenants:
  - {name: assay, topics: [projects/p/topics/assay]}
  - {name: imaging, topics: [projects/p/topics/imaging]}
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
  - {topic: projects/p/topics/assay, buckets: [triggers, assay-data]}
  - {topic: projects/p/topics/imaging, buckets: [imaging-data]}
""",
        "p.yaml",
    )
    assert policy.notifications == (
        Notifications("projects/p/topics/assay", ("triggers", "assay-data")),
        Notifications("projects/p/topics/imaging", ("imaging-data",)),
    )
    assert wired_buckets(policy, "projects/p/topics/assay") == ("triggers", "assay-data")
    assert wired_buckets(policy, "projects/p/topics/other") == ()
    assert parse_policy(TENANTS, "p.yaml").notifications == ()  # none wired: every notification is refused


def test_every_problem_of_a_notifications_list_is_named_at_once():
    text = (
        TENANTS
        + """
notifications:
  - {topic: projects/p/topics/assay, buckets: [Lab Data, triggers], prefix: x/}
  - {topic: topics/imaging, buckets: []}
  - {topic: projects/p/topics/nobody, buckets: [nobody-data]}
  - {topic: projects/p/topics/assay, buckets: triggers}
  - just-a-bucket
"""
    )
    assert refused(text) == [
        "notifications[0].prefix: unknown key (expected one of topic, buckets)",
        "notifications[0].buckets[0]: expected a bucket name, found string 'Lab Data'",
        "notifications[1].topic: expected projects/P/topics/T, found string 'topics/imaging'",
        "notifications[1].buckets: expected a list of the bucket names whose notifications reach the topic, "
        "found a list of 0",
        "notifications[3].buckets: expected a list, found string 'triggers'",
        "notifications[4]: expected a mapping, found string 'just-a-bucket'",
        "notifications[4].topic: expected projects/P/topics/T, found null",
        "notifications[4].buckets: expected a list of the bucket names whose notifications reach the topic, found null",
        "notifications: the topic projects/p/topics/assay is listed twice",
        "notifications[2].topic: expected a topic of a tenant (tenants[].topics), found projects/p/topics/nobody",
    ]
    assert refused("notifications: {topic: projects/p/topics/assay}") == [
        "notifications: expected a list, found a mapping of 1"
    ]
