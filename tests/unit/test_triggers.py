from __future__ import annotations

import json

import pytest

from relay.errors import InvalidTriggerError
from relay.naming import PIPELINE_NAME_RULE
from relay.triggers import MAX_TRIGGER_BYTES, format_for, parse_trigger

URI = "gs://triggers/t.json"


def problems_of(raw: bytes, fmt: str = "json") -> list[str]:
    with pytest.raises(InvalidTriggerError) as caught:
        parse_trigger(raw, fmt, URI)  # type: ignore[arg-type]
    assert URI in str(caught.value)
    return [str(p) for p in caught.value.problems]


def test_a_full_document_parses_in_either_format():
    document = {
        "pipeline": "push",
        "parameters": {"sources": ["gs://a/"], "token": "secret://kaggle"},
        "run_key": "nightly-2026-11-21",
        "labels": {"team": "assay"},
    }
    as_json = parse_trigger(json.dumps(document).encode(), "json", URI)
    as_yaml = parse_trigger(
        b"pipeline: push\nparameters:\n  sources: [gs://a/]\n  token: secret://kaggle\n"
        b"run_key: nightly-2026-11-21\nlabels: {team: assay}\n",
        "yaml",
        URI,
    )
    assert as_json == as_yaml
    assert as_json.parameters["token"] == "secret://kaggle"


def test_yaml_dates_stay_strings_as_in_json():
    trigger = parse_trigger(b"pipeline: echo\nparameters: {message: 2026-11-21}\n", "yaml", URI)
    assert trigger.parameters == {"message": "2026-11-21"}


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (b"{", "json", "(document): expected valid JSON, found Expecting property name"),
        (b"pipeline: [", "yaml", "(document): expected valid YAML"),
        (b'{"pipeline": "a", "pipeline": "b"}', "json", "duplicate key 'pipeline'"),
        (b"pipeline: a\npipeline: b\n", "yaml", "duplicate key 'pipeline'"),
        (b'{"pipeline": "echo", "parameters": {"x": NaN}}', "json", "NaN is not a JSON number"),
        (b"[1, 2]", "json", "(document): expected a mapping, found a list of 2"),
        (b"\xff\xfe", "json", "(document): expected UTF-8 text"),
        (b"{}", "json", "pipeline: expected a pipeline name: a lower-case letter"),
        (
            b'{"pipeline": "Push"}',
            "json",
            f"pipeline: expected {PIPELINE_NAME_RULE}, found string 'Push'",
        ),
        (b'{"pipeline": "echo", "extra": 1}', "json", "extra: expected one of the keys"),
        (b'{"pipeline": "echo", "parameters": [1]}', "json", "parameters: expected a mapping of parameter names"),
        (b'{"pipeline": "echo", "run_key": "Bad Key"}', "json", "run_key: expected a run key: a lower-case letter"),
        (b'{"pipeline": "echo", "labels": {"Team": "x"}}', "json", "labels.Team: expected a label key"),
        (b'{"pipeline": "echo", "labels": {"team": 3}}', "json", "labels.team: expected a label value"),
        (b'{"pipeline": "echo", "parameters": {"run_key": "x"}}', "json", "parameters.run_key: expected no value"),
        (b'{"pipeline": "echo", "version": 2}', "json", "version: expected 1, found number 2"),
    ],
)
def test_each_problem_names_field_expectation_and_finding(raw: bytes, fmt: str, expected: str):
    assert any(expected in problem for problem in problems_of(raw, fmt)), problems_of(raw, fmt)


def test_every_problem_is_reported_at_once():
    problems = problems_of(b'{"pipeline": 3, "labels": [], "surprise": true, "parameters": {"results_uri": ""}}')
    assert len(problems) == 4


def test_documents_over_one_mebibyte_are_refused_before_decoding():
    big = b'{"pipeline": "echo", "parameters": {"message": "' + b"x" * MAX_TRIGGER_BYTES + b'"}}'
    assert problems_of(big) == [f"(document): expected at most {MAX_TRIGGER_BYTES} bytes, found {len(big)} bytes"]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.json", "json"), ("a/b.YAML", "yaml"), ("c.yml", "yaml"), ("d.txt", None), ("e.json.tmp", None)],
)
def test_format_follows_the_name(name: str, fmt: str | None):
    assert format_for(name) == fmt
