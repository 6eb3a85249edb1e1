"""Whether and when a failed run starts again: the policy's `retries` read strictly, and the pure decision."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay import retries
from relay.adapters.states import failure_kind
from relay.policy_model import PolicyError, Retry
from tests.conftest import NOW
from tests.policies import policy

LAB = """
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    retries:
      echo: {retries: 3, max_retries: 5, backoff: 30s, max_backoff: 1m}
      push: {retries: 1, failures: [user]}
retries:
  echo: {retries: 2}
"""


def test_a_pipelines_retries_are_the_tenants_or_for_no_tenant_the_deployments():
    read = policy(LAB)
    assert retries.retry_for(read, "lab", "echo") == (Retry(3, 30.0, 60.0, max_retries=5), "tenants.lab.retries.echo")
    assert retries.retry_for(read, "lab", "push")[0].failures == ("user",)
    assert retries.retry_for(read, "", "echo") == (Retry(2, max_retries=2), "retries.echo")  # max: retries
    assert retries.retry_for(read, "lab", "other") == (retries.NO_RETRY, "")


def test_the_wait_doubles_from_backoff_up_to_max_backoff():
    setting = Retry(5, backoff=30.0, max_backoff=100.0)
    assert [retries.delay(setting, n) for n in (1, 2, 3, 4, 60)] == [30.0, 60.0, 100.0, 100.0, 100.0]


def test_infrastructure_failures_are_retried_until_the_last_attempt():
    setting, where = Retry(2, backoff=10.0), "tenants.lab.retries.echo"
    first = retries.decide(setting, where, "infrastructure", 1, NOW)
    assert first.retry_at == NOW + timedelta(seconds=10) and first.reason == "retry 1 of 2 after 10s"
    assert retries.decide(setting, where, "preempted", 2, NOW).retry_at == NOW + timedelta(seconds=20)
    last = retries.decide(setting, where, "infrastructure", 3, NOW)
    assert last.retry_at is None and last.reason == "attempt 3 was the last (tenants.lab.retries.echo.retries: 2)"


def test_a_refused_parameter_or_the_pipelines_own_failure_is_not_retried_unless_the_policy_says_so():
    where = "retries.echo"
    for failure in ("parameter", "user"):
        decision = retries.decide(Retry(3), where, failure, 1, NOW)
        assert decision.retry_at is None
        assert (
            decision.reason == f"a {failure} failure is not retried (retries.echo.failures: infrastructure, preempted)"
        )
    assert retries.decide(Retry(3, failures=("user",)), where, "user", 1, NOW).retry_at is not None
    assert retries.decide(retries.NO_RETRY, "", "infrastructure", 1, NOW).retry_at is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": 14, "message": "The service is currently unavailable."}, "infrastructure"),
        ({"code": 13, "message": "Internal error"}, "infrastructure"),
        ({"code": 8, "message": "Quota exceeded for cpus"}, "infrastructure"),
        ({"code": 10, "message": "aborted"}, "infrastructure"),
        ({"code": 9, "message": "The DAG failed because some tasks failed."}, "user"),
        ({"code": 9, "message": "Task train was preempted: the Spot VM was reclaimed"}, "preempted"),
        ({"code": 3, "message": "Invalid value for parameter count"}, "parameter"),
        ({"code": 11}, "parameter"),
        ({"message": "exit code 1"}, "user"),
        ({}, "user"),
        ("not a status", "user"),
    ],
)
def test_the_backends_error_status_says_whose_failure_it_was(error: object, kind: str):
    assert failure_kind(error) == kind


def test_every_problem_of_a_retries_entry_is_reported_at_once():
    with pytest.raises(PolicyError) as caught:
        policy(
            """
retries:
  echo: {retries: 11, max_retries: 1.5, backoff: soon, max_backoff: 2d, failures: [cosmic], colour: red}
  push: {retries: 4, max_retries: 2, backoff: 10m, max_backoff: 1m}
  Bad_Name: {}
  nightly: [1]
"""
        )
    assert list(caught.value.problems) == [
        "retries.echo.colour: unknown key (expected one of retries, max_retries, backoff, max_backoff, failures)",
        "retries.echo.retries: expected a whole number from 0 to 10, found number 11",
        "retries.echo.max_retries: expected a whole number from 0 to 10, found number 1.5",
        "retries.echo.backoff: expected a duration from 1s to 1d, like 30s or 10m, found string 'soon'",
        "retries.echo.max_backoff: expected a duration from 1s to 1d, like 30s or 10m, found string '2d'",
        "retries.echo.failures: expected a non-empty list of infrastructure, preempted, parameter, user, "
        "found a list of 1",
        "retries.push.max_retries: expected at least retries, found 2 below retries 4",
        "retries.push.max_backoff: expected at least backoff, found string '1m' below backoff string '10m'",
        "retries (a key): expected a pipeline name, found string 'Bad_Name'",
        "retries.nightly: expected a mapping, found a list of 1",
    ]


def test_a_trigger_may_ask_for_up_to_max_retries_and_its_own_count_decides():
    read = policy(LAB)
    assert retries.trigger_problems(read, "lab", "echo", None) == []
    assert retries.trigger_problems(read, "lab", "echo", 5) == []
    [over] = retries.trigger_problems(read, "lab", "echo", 6)
    assert (over.field, over.expected, over.found) == (
        "retries",
        "at most 5 (tenants.lab.retries.echo.max_retries)",
        "6",
    )
    [none] = retries.trigger_problems(read, "lab", "other", 1)
    assert none.expected == "at most 0 (no retries entry for other in the policy)"
    setting, where = retries.retry_for(read, "lab", "echo")
    assert retries.decide(setting, where, "infrastructure", 4, NOW, asked=5).retry_at is not None
    assert retries.decide(setting, where, "infrastructure", 4, NOW).reason.startswith("attempt 4 was the last")
    off = retries.decide(setting, where, "infrastructure", 1, NOW, asked=0)
    assert (off.retry_at, off.reason) == (None, "the trigger asked for no retries for this pipeline")
