"""A route's `set` in the policy: what it may say, and the message for each mistake."""

from __future__ import annotations

import pytest

from relay.sets import DEFAULT_DEADLINE, SetRule
from tests.policies import policy
from tests.unit.test_policy_parsing import refused


def route(text: str) -> str:
    return f"tenants: [{{name: a, routes: [{{id: r, bucket: bkt, pipeline: push, {text}}}]}}]"


def test_a_set_reads_its_size_marker_quiet_period_and_deadline():
    parsed = policy(route("set: {size: 24, marker: _SUCCESS, quiet: 10m, deadline: 2h}"))
    assert parsed.tenants[0].routes[0].set_rule == SetRule(24, "_SUCCESS", 600.0, 7200.0)


def test_without_a_deadline_a_set_has_a_day():
    rule = policy(route("set: {size: 2}")).tenants[0].routes[0].set_rule
    assert rule is not None and rule.deadline_seconds == DEFAULT_DEADLINE


def test_a_route_without_a_set_is_one_run_per_object():
    assert policy(route("glob: '*'")).tenants[0].routes[0].set_rule is None


def test_the_marker_is_taken_by_its_set_route_whatever_the_glob():
    parsed = policy(route("glob: '*.csv', set: {marker: _SUCCESS}"))
    assert parsed.tenants[0].routes[0].matches("bkt", "plate/_SUCCESS")
    assert not parsed.tenants[0].routes[0].matches("bkt", "plate/notes.txt")


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "set: {size: 0, marker: a/b, quiet: soon}",
            [
                "tenants.a.routes[0].set.size: expected a whole number of objects from 1 to 10000, found number 0",
                "tenants.a.routes[0].set.marker: expected an object's last name segment, like _SUCCESS (no /), "
                "found string 'a/b'",
                "tenants.a.routes[0].set.quiet: expected a duration from 1s to 7d, like 30s, 10m or 2h, "
                "found string 'soon'",
            ],
        ),
        (
            "set: {deadline: 1h}",
            ["tenants.a.routes[0].set: expected size, marker or quiet (when a set is complete), found deadline"],
        ),
        (
            "set: {quiet: 2h, deadline: 1h}",
            [
                "tenants.a.routes[0].set.deadline: expected longer than quiet, found string '1h', not beyond quiet "
                "string '2h'"
            ],
        ),
        ("set: {size: 2, every: 3}", None),
        (
            "set: {size: 2}, parameters: {items: 'list: {objects}', name: '{name}'}",
            [
                "tenants.a.routes[0].parameters.items: expected {objects} as the whole value (it is a list), "
                "found 'list: {objects}'",
                "tenants.a.routes[0].parameters.name: expected {field} templates, found an unknown field {name} "
                "(known: objects, count, set, bucket, folder, marker)",
            ],
        ),
    ],
)
def test_a_set_names_what_is_wrong_with_it(text: str, problems: list[str] | None):
    found = refused(route(text))
    if problems is None:  # an unknown key: the reader's own message, whatever it is, names it
        assert any("every" in problem for problem in found)
    else:
        assert found == problems
