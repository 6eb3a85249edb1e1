"""relay.templates: the one fill routes and chains use (their own tests hold the messages they build on it)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.templates import fill_text, pieces

VALUES: dict[str, Any] = {"name": "plates/a.csv", "size": 42, "objects": ["a", "b"], "empty": ""}


def fill(template: str) -> tuple[Any, str | None]:
    return fill_text(list(pieces(template, lambda name: True, "any")), VALUES.get)


def test_fields_are_filled_once_into_the_text_and_doubled_braces_are_literal():
    assert fill("gs://b/{name}#{size} {{name}}") == ("gs://b/plates/a.csv#42 {name}", None)
    assert fill("{ name }") == ("plates/a.csv", None)  # a field's name is read without its spaces
    assert fill("{empty}-{empty}") == ("-", None)  # an empty value is a value, not a missing one


def test_a_whole_value_placeholder_keeps_its_type_and_a_text_without_fields_is_itself():
    assert fill("{size}") == (42, None)
    assert fill("{objects}") == (["a", "b"], None)
    assert fill("plain") == ("plain", None)
    assert fill("") == ("", None)


@pytest.mark.parametrize("template", ["{missing}", "a {missing} then {name}", "{name} then {missing} and {gone}"])
def test_the_first_field_without_a_value_is_named_and_nothing_is_filled(template: str):
    assert fill(template) == (None, "missing")
