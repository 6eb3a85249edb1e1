"""The policy's caps: read strictly, and which scopes a run counts against (pure decisions)."""

from __future__ import annotations

import pytest

from relay.errors import Problem
from relay.policy import PolicyError, parse_policy
from relay.policy_caps import CapScope, cap_scopes, describe, paused_by, priority_problems, rejecting
from relay.policy_model import Cap
from tests.policies import policy

CAPPED = policy(
    """
caps: {max_in_flight: 50, pipelines: {push: {max_per_minute: 100}}}
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    caps:
      max_in_flight: 2
      at_cap: queue
      pipelines: {echo: {max_in_flight: 1, max_per_minute: 6, at_cap: reject}}
  - name: free
    triggers: [gs://triggers/free/]
"""
)


def refused(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return list(caught.value.problems)


def test_a_run_counts_against_every_capped_scope_it_falls_under_widest_first():
    scopes = cap_scopes(CAPPED, "lab", "echo")
    assert [(s.id, s.where) for s in scopes] == [
        ("deployment", "caps"),
        ("tenant-lab", "tenants.lab.caps"),
        ("tenant-lab--echo", "tenants.lab.caps.pipelines.echo"),
    ]
    assert scopes[2].cap == Cap(max_in_flight=1, max_per_minute=6, at_cap="reject")
    assert [s.id for s in cap_scopes(CAPPED, "lab", "push")] == ["deployment", "deployment--push", "tenant-lab"]
    assert [s.id for s in cap_scopes(CAPPED, "free", "other")] == ["deployment"]
    assert [s.id for s in cap_scopes(CAPPED, "", "echo")] == ["deployment"]  # no tenant: the deployment's only
    assert cap_scopes(policy("tenants: [{name: a}]"), "a", "echo") == ()


def test_only_a_scope_that_says_reject_rejects():
    assert [s.id for s in rejecting(cap_scopes(CAPPED, "lab", "echo"))] == ["tenant-lab--echo"]
    assert rejecting(cap_scopes(CAPPED, "lab", "push")) == ()


def test_a_pause_holds_a_whole_tenant_or_one_of_its_pipelines():
    paused = {("lab", ""), ("free", "echo")}
    assert paused_by(paused, "lab", "push") == "tenant lab is paused"
    assert paused_by(paused, "free", "echo") == "pipeline echo of tenant free is paused"
    assert paused_by(paused, "free", "push") is None
    assert paused_by({("", "")}, "", "echo") == "tenant (none) is paused"


def test_why_a_run_waits_names_the_cap_and_where_the_policy_sets_it():
    lab, echo = CapScope("lab", None, Cap(2), "tenants.lab.caps"), cap_scopes(CAPPED, "lab", "echo")[2]
    assert describe(lab, rate=False) == "tenant lab has 2 runs in flight (tenants.lab.caps.max_in_flight)"
    assert describe(echo, rate=True) == (
        "tenant lab's pipeline echo launched its 6 runs this minute (tenants.lab.caps.pipelines.echo.max_per_minute)"
    )


def test_every_problem_in_caps_is_reported_at_once():
    text = """
caps: {max_in_flight: 0, max_per_minute: true, at_cap: drop, colour: red}
tenants:
  - name: lab
    caps:
      max_in_flight: 1001
      pipelines: {Bad: {max_in_flight: 1}, echo: {at_cap: reject}, push: {max_in_flight: 2.5, pipelines: {}}}
  - name: two
    caps: [1]
"""
    assert refused(text) == [
        "tenants.lab.caps.max_in_flight: expected a whole number from 1 to 1000, found number 1001",
        "tenants.lab.caps.pipelines (a key): expected a pipeline name, found string 'Bad'",
        "tenants.lab.caps.pipelines.echo: expected max_in_flight or max_per_minute beside at_cap, found at_cap alone",
        "tenants.lab.caps.pipelines.push.pipelines: unknown key (expected one of max_in_flight, max_per_minute, "
        "at_cap)",
        "tenants.lab.caps.pipelines.push.max_in_flight: expected a whole number from 1 to 1000, found number 2.5",
        "tenants.two.caps: expected a mapping, found a list of 1",
        "caps.colour: unknown key (expected one of max_in_flight, max_per_minute, at_cap, pipelines, max_priority)",
        "caps.max_in_flight: expected a whole number from 1 to 1000, found number 0",
        "caps.max_per_minute: expected a whole number from 1 to 1000, found boolean true",
        "caps.at_cap: expected one of queue, reject, supersede, found string 'drop'",
    ]


def test_a_trigger_may_ask_for_a_priority_up_to_its_tenants_max_priority():
    bounded = policy("caps: {max_priority: 1}\ntenants: [{name: lab, caps: {max_priority: 5}}, {name: free}]")
    assert priority_problems(bounded, "lab", 5) == []
    assert priority_problems(bounded, "lab", 6) == [
        Problem("priority", "at most 5 (tenants.lab.caps.max_priority)", "6")
    ]
    assert priority_problems(bounded, "free", 1) == [
        Problem("priority", "at most 0 (tenants.free.caps.max_priority)", "1")
    ]
    assert priority_problems(bounded, "", 1) == []  # no tenant: the deployment's bound
    assert refused("tenants: [{name: lab, caps: {max_priority: 10}}]") == [
        "tenants.lab.caps.max_priority: expected a whole number from 0 to 9, found number 10"
    ]
