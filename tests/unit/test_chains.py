"""A chain's pure decisions: its syntax, its templates filled from a finished run, which steps follow which end,
the next run's derived key, and the policy's ceiling."""

from __future__ import annotations

import pytest

from relay import chains, naming
from relay.errors import InvalidTriggerError
from relay.policy import PolicyError, parse_policy
from relay.triggers import parse_trigger

FINISHED = chains.Finished(
    run_key="echo-abc",
    pipeline="echo",
    state="succeeded",
    outputs={"Output": "plate 1 done", "rows": 24},
    metrics={"seconds": 1.5},
    parameters={"message": "plate 1"},
)


def test_a_chain_parses_with_its_defaults_and_keeps_its_templates():
    steps, problems = chains.parse_chain(
        [
            {"pipeline": "report", "parameters": {"message": "{outputs.Output}"}},
            {"pipeline": "echo", "on": "failed", "after": "report"},
        ],
        "chain",
    )
    assert problems == []
    assert steps == (
        chains.Step("report", "", "succeeded", {"message": "{outputs.Output}"}),
        chains.Step("echo", "report", "failed", {}),
    )
    assert steps[0].fields() == [("parameters.message", "outputs.Output")]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        (
            {"pipeline": "x"},
            ["chain: expected a list of 1 to 8 steps (pipeline, on, after, parameters), found a mapping of 1"],
        ),
        (
            [{"pipeline": "x"}] * 9,
            ["chain: expected a list of 1 to 8 steps (pipeline, on, after, parameters), found a list of 9"],
        ),
        (["x"], ["chain[0]: expected a mapping of pipeline, on, after, parameters, found string 'x'"]),
        (
            [{"pipeline": "Bad", "on": "ended", "when": 1, "parameters": {"m": "{output.x}"}}],
            [
                "chain[0].when: expected one of the keys pipeline, on, after, parameters, found an unknown key",
                f"chain[0].pipeline: expected {naming.PIPELINE_NAME_RULE}, found string 'Bad'",
                "chain[0].on: expected one of succeeded, failed, found string 'ended'",
                "chain[0].parameters.m: expected {field} templates, found an unknown field {output.x} "
                f"(known: {chains.FIELDS})",
            ],
        ),
    ],
)
def test_each_problem_of_a_chain_names_where_what_was_expected_and_what_was_found(chain: object, expected: list[str]):
    steps, problems = chains.parse_chain(chain, "chain")
    assert steps == ()
    assert [str(problem) for problem in problems] == expected


def test_a_trigger_carries_its_chain_and_reports_its_problems_with_the_others():
    trigger = parse_trigger(b'{"pipeline": "echo", "chain": [{"pipeline": "echo"}]}', "json", "gs://t/a.json")
    assert trigger.chain == (chains.Step("echo"),)
    with pytest.raises(InvalidTriggerError) as caught:
        parse_trigger(b'{"pipeline": "echo", "priority": -1, "chain": [{"on": "x"}]}', "json", "gs://t/a.json")
    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["priority", "chain[0].pipeline", "chain[0].on"]


def test_templates_fill_from_the_finished_run_keeping_a_whole_values_type():
    step = chains.Step(
        "report",
        parameters={
            "message": "{outputs.Output}",
            "count": "{outputs.rows}",
            "note": "{pipeline} {run_key} took {metrics.seconds}s on {parameters.message} {{literal}}",
            "items": ["{metrics.seconds}"],
        },
    )
    filled, problems = chains.render(step, 0, FINISHED)
    assert problems == []
    assert filled == {
        "message": "plate 1 done",
        "count": 24,
        "note": "echo echo-abc took 1.5s on plate 1 {literal}",
        "items": [1.5],
    }


def test_a_value_the_finished_runs_result_lacks_is_a_problem_naming_it():
    step = chains.Step("report", parameters={"message": "{outputs.Missing}", "n": "{metrics.rows}"})
    _, problems = chains.render(step, 2, FINISHED)
    assert [str(problem) for problem in problems] == [
        "chain[2].parameters.message: expected the finished run's outputs.Missing ({outputs.Missing}), "
        "found none in echo-abc's result",
        "chain[2].parameters.n: expected the finished run's metrics.rows ({metrics.rows}), "
        "found none in echo-abc's result",
    ]


def test_a_step_follows_the_first_run_or_every_run_of_its_after_pipeline_on_its_end():
    steps = (
        chains.Step("a"),
        chains.Step("b", "", "failed"),
        chains.Step("c", "a"),
        chains.Step("d", "echo"),
    )
    assert [index for index, _ in chains.following(steps, "echo", "succeeded", 0)] == [0, 3]
    assert [index for index, _ in chains.following(steps, "echo", "failed", 0)] == [1]
    assert [index for index, _ in chains.following(steps, "echo", "succeeded", 2)] == [3]  # a cycle goes on
    assert [index for index, _ in chains.following(steps, "a", "succeeded", 1)] == [2]
    assert chains.following(steps, "echo", "cancelled", 0) == []


def test_the_next_key_is_derived_from_the_previous_and_the_step_and_stays_a_run_key():
    assert chains.next_key("echo-abc", 0) == "echo-abc-then-1"
    assert chains.next_key("echo-abc", 0) == chains.next_key("echo-abc", 0)
    assert chains.next_key("echo-abc", 1) != chains.next_key("echo-abc", 0)
    key = "echo-abc"
    seen = set()
    for _ in range(40):  # a cycle's keys grow, then stay within the rule, each unlike the others
        key = chains.next_key(key, 0)
        assert naming.RUN_KEY.match(key) and key not in seen
        seen.add(key)


def test_the_ceiling_lets_up_to_its_count_of_runs_follow_the_first():
    assert chains.ceiling_problem(3, 3, "tenants.lab.max_chain") is None
    problem = chains.ceiling_problem(4, 3, "tenants.lab.max_chain")
    assert str(problem) == (
        "(chain): expected at most 3 runs after the chain's first (tenants.lab.max_chain), found a run 4 steps on"
    )


def test_the_policy_sets_max_chain_per_tenant_and_a_routes_chain_with_clear_messages():
    text = """
tenants:
  - name: lab
    topics: [projects/proj-lab/topics/lab]
    max_chain: 2
    routes:
      - id: plates
        bucket: lab-data
        pipeline: echo
        parameters: {message: "{name}"}
        chain: [{pipeline: report, parameters: {message: "{outputs.Output}"}}]
max_chain: 0
"""
    parsed = parse_policy(text, "policy.yaml")
    assert parsed.max_chain == 0 and parsed.tenants[0].max_chain == 2
    assert parsed.tenants[0].routes[0].chain == (chains.Step("report", parameters={"message": "{outputs.Output}"}),)
    assert parse_policy("tenants: [{name: lab}]", "p").tenants[0].max_chain == chains.DEFAULT_MAX_CHAIN
    bad = text.replace("max_chain: 2", "max_chain: 101").replace("{outputs.Output}", "{output}")
    with pytest.raises(PolicyError) as caught:
        parse_policy(bad, "policy.yaml")
    assert caught.value.problems == (
        "tenants.lab.routes[0].chain[0].parameters.message: expected {field} templates, found an unknown field "
        f"{{output}} (known: {chains.FIELDS})",
        "tenants.lab.max_chain: expected a whole number from 0 to 100 (runs a chain may start after its first), "
        "found number 101",
    )
