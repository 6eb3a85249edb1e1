from __future__ import annotations

import json
import re

import pytest
import yaml

from relay.errors import InvalidTriggerError
from relay.naming import PIPELINE_NAME_RULE
from relay.triggers import (
    MAX_DEPTH,
    MAX_TRIGGER_BYTES,
    MAX_VALUES,
    Format,
    StrictLoader,
    Trigger,
    TriggerLoader,
    describe_value,
    format_for,
    nesting_depth,
    parse_trigger,
)

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
    assert (
        as_json
        == as_yaml
        == Trigger(
            pipeline="push",
            parameters={"sources": ["gs://a/"], "token": "secret://kaggle"},
            run_key="nightly-2026-11-21",
            labels={"team": "assay"},
        )
    )


def test_yaml_dates_stay_strings_as_in_json():
    trigger = parse_trigger(b"pipeline: echo\nparameters: {message: 2026-11-21}\n", "yaml", URI)
    assert trigger.parameters == {"message": "2026-11-21"}


PIPELINE = f"pipeline: expected {PIPELINE_NAME_RULE}"
KEYS = (
    "expected one of the keys version, pipeline, parameters, run_key, labels, priority, retries, chain, "
    "found an unknown key"
)
RESERVED = "expected no value (Relay fills it), found a value"


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (
            b"{",
            "json",
            "(document): expected valid JSON, found Expecting property name enclosed in double quotes: line 1 column 2"
            " (char 1)",
        ),
        (
            b"pipeline: [",
            "yaml",
            "(document): expected valid YAML, found while parsing a flow node did not find expected node content in"
            ' "<unicode string>", line 2, column 1',
        ),
        (
            b'{"pipeline": "a", "pipeline": "b"}',
            "json",
            "(document): expected valid JSON, found duplicate key 'pipeline'",
        ),
        (
            b"pipeline: a\npipeline: b\n",
            "yaml",
            "(document): expected valid YAML, found duplicate key 'pipeline' in \"<unicode string>\", line 2, column 1",
        ),
        (
            b"a: &x [1]\nb: *x\n",
            "yaml",
            "(document): expected valid YAML, found aliases (*name) are not allowed in a trigger in"
            ' "<unicode string>", line 2, column 4',
        ),
        (
            b'{"pipeline": "echo", "parameters": {"x": NaN}}',
            "json",
            "(document): expected valid JSON, found NaN is not a JSON number",
        ),
        (b"[1, 2]", "json", "(document): expected a mapping, found a list of 2"),
        (b"\xff\xfe", "json", "(document): expected UTF-8 text, found bad byte at 0"),
        (b'{"pipeline": "echo", "x": "\xc3\xa9\xff"}', "json", "(document): expected UTF-8 text, found bad byte at 29"),
        (b"{}", "json", f"{PIPELINE}, found nothing"),
        (b'{"pipeline": null}', "json", f"{PIPELINE}, found nothing"),
        (b'{"pipeline": "Push"}', "json", f"{PIPELINE}, found string 'Push'"),
        (b'{"pipeline": "echo", "extra": 1}', "json", f"extra: {KEYS}"),
        (
            b'{"pipeline": "echo", "parameters": [1]}',
            "json",
            "parameters: expected a mapping of parameter names to values, found a list of 1",
        ),
        (
            b'{"pipeline": "echo", "run_key": "Bad Key"}',
            "json",
            "run_key: expected a run key: a lower-case letter, then up to 126 lower-case letters, digits or hyphens,"
            " found string 'Bad Key'",
        ),
        (
            b'{"pipeline": "echo", "labels": {"Team": "x"}}',
            "json",
            "labels.Team: expected a label key: a lower-case letter, then up to 62 lower-case letters, digits, _ or -,"
            " found 'Team'",
        ),
        (
            b'{"pipeline": "echo", "labels": {"team": 3}}',
            "json",
            "labels.team: expected a label value: up to 63 lower-case letters, digits, _ or -, found number 3",
        ),
        (
            b'{"pipeline": "echo", "labels": "team"}',
            "json",
            "labels: expected a mapping of label names to strings, found string 'team'",
        ),
        (b'{"pipeline": "echo", "parameters": {"run_key": "x"}}', "json", f"parameters.run_key: {RESERVED}"),
        (b'{"pipeline": "echo", "parameters": {"tenant": "x"}}', "json", f"parameters.tenant: {RESERVED}"),
        (b'{"pipeline": "echo", "version": 2}', "json", "version: expected 1, found number 2"),
        (b'{"pipeline": "echo", "version": true}', "json", "version: expected 1, found boolean true"),
    ],
)
def test_each_problem_names_field_expectation_and_finding(raw: bytes, fmt: str, expected: str):
    assert problems_of(raw, fmt) == [expected]


def test_every_problem_is_reported_at_once():
    problems = problems_of(b'{"pipeline": 3, "labels": [], "surprise": true, "parameters": {"results_uri": ""}}')
    assert problems == [
        f"surprise: {KEYS}",
        f"{PIPELINE}, found number 3",
        f"parameters.results_uri: {RESERVED}",
        "labels: expected a mapping of label names to strings, found a list of 0",
    ]


OWN = "a key of the trigger's own (not relay-*, which Relay sets, nor vertex-ai-pipelines-run-billing-id)"


@pytest.mark.parametrize(
    "key", ["vertex-ai-pipelines-run-billing-id", "relay-tenant", "relay-pipeline", "relay-trigger", "relay-x"]
)
def test_a_trigger_cannot_set_a_label_relay_or_vertex_sets(key: str):
    # Vertex overrides the billing id silently; Relay's own would say another tenant, pipeline or origin.
    raw = json.dumps({"pipeline": "echo", "labels": {"team": "assay", key: "other"}}).encode()
    assert problems_of(raw) == [f"labels.{key}: expected {OWN}, found {key!r}"]
    assert problems_of(raw, "yaml") == [f"labels.{key}: expected {OWN}, found {key!r}"]


def test_a_trigger_leaves_room_in_a_runs_64_labels_for_relays_own_three():
    labels = {f"l{n}": "" for n in range(61)}
    assert parse_trigger(json.dumps({"pipeline": "echo", "labels": labels}).encode(), "json", URI).labels == labels
    crowded = json.dumps({"pipeline": "echo", "labels": {**labels, "l61": ""}}).encode()
    assert problems_of(crowded) == [
        "labels: expected at most 61 labels (a run takes 64; Relay adds relay-tenant, relay-pipeline, relay-trigger),"
        " found 62"
    ]


def test_a_refused_trigger_says_why_by_its_code():
    big = b'{"pipeline": "echo", "parameters": {"message": "' + b"x" * MAX_TRIGGER_BYTES + b'"}}'
    with pytest.raises(InvalidTriggerError) as too_large:
        parse_trigger(big, "json", URI)
    with pytest.raises(InvalidTriggerError) as invalid:
        parse_trigger(b"{}", "json", URI)
    assert (too_large.value.code, invalid.value.code) == ("too_large", "invalid_trigger")


def test_a_trigger_names_only_its_pipeline_and_takes_the_rest_as_empty():
    assert parse_trigger(b'{"pipeline": "echo"}', "json", URI) == Trigger(pipeline="echo")
    assert parse_trigger(b"pipeline: echo\nversion: 1\n", "yaml", URI) == Trigger(
        pipeline="echo", parameters={}, run_key=None, labels={}
    )


def test_documents_over_one_mebibyte_are_refused_before_decoding():
    big = b'{"pipeline": "echo", "parameters": {"message": "' + b"x" * MAX_TRIGGER_BYTES + b'"}}'
    assert problems_of(big) == [f"(document): expected at most {MAX_TRIGGER_BYTES} bytes, found {len(big)} bytes"]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.json", "json"), ("a/b.YAML", "yaml"), ("c.yml", "yaml"), ("d.txt", None), ("e.json.tmp", None)],
)
def test_format_follows_the_name(name: str, fmt: str | None):
    assert format_for(name) == fmt


def nested_yaml(levels: int, *, flow: bool) -> bytes:
    """A trigger whose parameter `p` makes the whole document `levels` lists and mappings deep."""
    inner = levels - 2  # the document's mapping and `parameters` are two levels
    if flow:
        return b"pipeline: echo\nparameters:\n  p: " + b"[" * inner + b"]" * inner + b"\n"
    lines = [b"pipeline: echo", b"parameters:", b"  p:"]
    lines += [b"  " * (level + 2) + b"- " + (b"x" if level == inner - 1 else b"") for level in range(inner)]
    return b"\n".join(lines) + b"\n"


def nested_json(levels: int) -> bytes:
    inner = levels - 2
    return b'{"pipeline": "echo", "parameters": {"p": ' + b"[" * inner + b"]" * inner + b"}}"


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [
        (nested_yaml(MAX_DEPTH, flow=True), "yaml"),
        (nested_yaml(MAX_DEPTH, flow=False), "yaml"),
        (nested_json(MAX_DEPTH), "json"),
    ],
    ids=["yaml-flow", "yaml-block", "json"],
)
def test_nesting_up_to_the_limit_parses_and_one_level_more_is_refused(raw: bytes, fmt: Format):
    assert nesting_depth(parse_trigger(raw, fmt, URI).parameters) == MAX_DEPTH - 1
    deeper = raw.replace(b"[", b"[[", 1).replace(b"]", b"]]", 1) if b"[" in raw else raw.replace(b"x\n", b"- x\n")
    [problem] = problems_of(deeper, fmt)
    assert problem.startswith(f"(document): expected at most {MAX_DEPTH} levels of lists and mappings, found more")


def test_the_yaml_loader_stops_at_the_first_level_too_deep_before_reading_on():
    # The syntax error after the deep part is never reached: the parser stopped at level MAX_DEPTH + 1.
    raw = nested_yaml(MAX_DEPTH + 1, flow=True) + b"run_key: [unclosed\n"
    [problem] = problems_of(raw, "yaml")
    assert f"expected at most {MAX_DEPTH} levels" in problem and "line 3" in problem
    # Far deeper than Python's recursion limit: refused as deep, not as a crash of the parser.
    assert "levels of lists and mappings" in problems_of(nested_yaml(10_000, flow=True), "yaml")[0]
    assert problems_of(nested_json(10_000), "json") == [
        f"(document): expected at most {MAX_DEPTH} levels of lists and mappings, found more than {MAX_DEPTH} levels"
    ]


def test_a_syntax_error_at_the_end_of_a_large_yaml_names_its_line():
    # As many entries as MAX_VALUES allows: the document's mapping, its two keys, `parameters` and `bad: [unclosed`
    # are seven values.
    count = (MAX_VALUES - 7) // 2
    entries = b"".join(b"  k%06d: value\n" % i for i in range(count))
    raw = b"pipeline: echo\nparameters:\n" + entries + b"  bad: [unclosed\n"
    [problem] = problems_of(raw, "yaml")
    assert problem.startswith("(document): expected valid YAML") and f"line {count + 3}" in problem


def test_a_document_of_exactly_the_size_limit_is_read():
    head, tail = b'{"pipeline": "echo", "parameters": {"message": "', b'"}}'
    exact = head + b"x" * (MAX_TRIGGER_BYTES - len(head) - len(tail)) + tail
    assert len(exact) == MAX_TRIGGER_BYTES
    assert len(parse_trigger(exact, "json", URI).parameters["message"]) == MAX_TRIGGER_BYTES - len(head) - len(tail)
    one_more = exact.replace(b"xx", b"xxx", 1)
    assert problems_of(one_more) == [
        f"(document): expected at most {MAX_TRIGGER_BYTES} bytes, found {len(one_more)} bytes"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
        ("base: &b {x: 1}\nmore:\n  <<: *b\n", "aliases (*name) are not allowed"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: {k: 1, k: 2}\n", "duplicate key 'k'"),
        ("a: !!python/object:os.system x\n", "could not determine a constructor"),
    ],
)
def test_the_strict_loader_keeps_every_rule(text: str, expected: str):
    with pytest.raises(yaml.YAMLError, match=re.escape(expected)):
        yaml.load(text, Loader=StrictLoader)


def test_the_strict_loader_is_libyamls_where_pyyaml_has_it_and_keeps_dates_as_strings():
    assert issubclass(StrictLoader, yaml.CSafeLoader) == yaml.__with_libyaml__
    assert yaml.load("day: 2026-11-21\nn: 3\nf: 1.5\nok: true\n", Loader=StrictLoader) == {
        "day": "2026-11-21",
        "n": 3,
        "f": 1.5,
        "ok": True,
    }


@pytest.mark.parametrize(
    ("text", "found"),
    [("p: !!binary aGk=\n", "bytes"), ("p: !!set {a: null}\n", "set"), ("p: .nan\n", "Out of range float values")],
)
def test_yaml_only_values_are_refused(text: str, found: str):
    [problem] = problems_of(b"pipeline: echo\nparameters:\n  " + text.encode(), "yaml")
    assert problem.startswith("(document): expected JSON values only") and found in problem


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (None, "null"),
        (True, "boolean true"),
        (False, "boolean false"),
        (3, "number 3"),
        (1.5, "number 1.5"),
        (float("nan"), "NaN"),
        ("x" * 60, f"string '{'x' * 60}'"),  # up to 60 characters shown whole
        ("y" * 61, f"string '{'y' * 57}...'"),
        ([1, 2], "a list of 2"),
        ({}, "a mapping of 0"),
        (b"hi", "bytes"),
    ],
)
def test_a_found_value_is_described_by_its_type_first(value: object, described: str):
    assert describe_value(value) == described


@pytest.mark.parametrize(("value", "depth"), [("x", 0), ([], 1), ({"a": [[1], 2]}, 3), ([[1], 2], 2), ([2, [1]], 2)])
def test_nesting_depth_counts_the_deepest_branch(value: object, depth: int):
    assert nesting_depth(value) == depth


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_levels_count_down_as_lists_close(fmt: Format):
    # Many lists side by side are one level each; a nest after them still counts from its own start.
    siblings = {f"s{i}": [[]] for i in range(MAX_DEPTH + 5)}
    for levels, refused in [(MAX_DEPTH, False), (MAX_DEPTH + 1, True)]:
        nest: object = []
        for _ in range(levels - 3):  # the document, `parameters` and the nest's own outer list are three
            nest = [nest]
        raw = json.dumps({"pipeline": "echo", "parameters": {**siblings, "z": nest}}).encode()
        if refused:
            assert "levels of lists and mappings" in problems_of(raw, fmt)[0]
        else:
            assert nesting_depth(parse_trigger(raw, fmt, URI).parameters) == MAX_DEPTH - 1


UTF8 = "expected UTF-8 text (a lone surrogate such as \\ud800 has none)"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"pipeline": "echo", "parameters": {"message": "\\ud800"}}', f"parameters.message: {UTF8}, found string"),
        (b'{"pipeline": "echo", "parameters": {"\\udfff": "x"}}', f"parameters.\\udfff: {UTF8}, found the key"),
        (b'{"pipeline": "echo", "parameters": {"o": {"a": [1, "x\\udc00"]}}}', f"parameters.o.a[1]: {UTF8}, found"),
        (b'{"pipeline": "echo", "labels": {"team": "\\ud800"}}', f"labels.team: {UTF8}, found string"),
        (b'{"pipeline": "\\ud800"}', f"pipeline: {UTF8}, found string"),
        (b'{"pipeline": "echo", "\\ud800x": 1}', f"\\ud800x: {UTF8}, found the key"),
    ],
    ids=["value", "key", "nested", "label", "pipeline", "top-level-key"],
)
def test_text_with_no_utf8_form_is_refused_naming_its_field(raw: bytes, problem: str):
    # JSON spells a lone surrogate as an escape, and json.loads makes it a str: no backend can take it.
    [found] = problems_of(raw)
    assert found.startswith(problem), found


def test_a_valid_surrogate_pair_is_one_character_and_is_kept():
    trigger = parse_trigger(b'{"pipeline": "echo", "parameters": {"message": "\\ud83d\\ude00"}}', "json", URI)
    assert trigger.parameters == {"message": "\U0001f600"}


def test_only_the_first_ten_strings_without_utf8_are_listed():
    items = ", ".join('"\\ud800"' for _ in range(50)).encode()
    problems = problems_of(b'{"pipeline": "echo", "parameters": {"p": [' + items + b"]}}")
    assert len(problems) == 10 and problems[0].startswith(f"parameters.p[0]: {UTF8}")


def values_document(count: int, fmt: Format) -> bytes:
    """A trigger of exactly `count` values: the document, `pipeline` and its name, `parameters`, its mapping, `p`
    and its list are seven; the rest are the list's items."""
    items = ", ".join(["0"] * (count - 7))
    if fmt == "json":
        return b'{"pipeline": "echo", "parameters": {"p": [' + items.encode() + b"]}}"
    return b"pipeline: echo\nparameters:\n  p: [" + items.encode() + b"]\n"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_more_values_than_the_limit_are_refused_before_anything_is_built(fmt: Format):
    assert len(parse_trigger(values_document(MAX_VALUES, fmt), fmt, URI).parameters["p"]) == MAX_VALUES - 7
    [problem] = problems_of(values_document(MAX_VALUES + 1, fmt), fmt)
    assert problem.startswith(
        f"(document): expected at most {MAX_VALUES} values (list items, mapping keys and values), found more than"
    )
    # A mebibyte of empty lists took the parsers 0.3 s (JSON) to 3.4 s (YAML) to build before it was refused.
    unit = b"[], " if fmt == "json" else b"{}, "
    flood = values_document(8, fmt).replace(b"[0", b"[" + unit * ((MAX_TRIGGER_BYTES - 100) // len(unit)) + b"0")
    assert len(flood) <= MAX_TRIGGER_BYTES and "values" in problems_of(flood, fmt)[0]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_an_empty_list_or_mapping_is_one_value(fmt: Format):
    at_limit = values_document(MAX_VALUES, fmt).replace(b"0", b"[ ]").replace(b"[ ], [ ]", b"[ ], {}")
    assert len(parse_trigger(at_limit, fmt, URI).parameters["p"]) == MAX_VALUES - 7
    one_more = at_limit.replace(b"[ ]", b"{ }, [ ]", 1)
    assert "values" in problems_of(one_more, fmt)[0]


def test_commas_colons_and_brackets_inside_json_strings_are_no_values():
    text = ",:[{" * (MAX_VALUES // 2) + '\\"]}'
    trigger = parse_trigger(json.dumps({"pipeline": "echo", "parameters": {"m": text}}).encode(), "json", URI)
    assert trigger.parameters == {"m": text}
    # Nor do they hide a nest: brackets are counted outside strings only.
    deep = b'{"pipeline": "echo", "parameters": {"m": "]]]]", "p": ' + b"[" * 63 + b"]" * 63 + b"}}"
    assert "levels of lists and mappings" in problems_of(deep)[0]


def test_the_policy_s_loader_keeps_every_rule_but_the_bound_on_values():
    # The operator's policy is read with StrictLoader: a large deployment may list more values than a trigger may.
    entries = "".join(f"  - {{name: t{i}, triggers: [gs://b/t{i}/]}}\n" for i in range(MAX_VALUES // 4))
    assert len(yaml.load("tenants:\n" + entries, Loader=StrictLoader)["tenants"]) == MAX_VALUES // 4
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_VALUES}"):
        yaml.load("tenants:\n" + entries, Loader=TriggerLoader)


@pytest.mark.parametrize("priority", [-1, 10, 2.5, True, "9"])
def test_a_priority_is_a_whole_number_from_0_to_9(priority: object):
    document = json.dumps({"pipeline": "echo", "priority": priority}).encode()
    with pytest.raises(InvalidTriggerError) as caught:
        parse_trigger(document, "json", URI)
    [problem] = caught.value.problems
    assert (problem.field, problem.expected) == (
        "priority",
        "a whole number from 0 to 9 (the higher launches first from the queue)",
    )


def test_a_priority_left_out_is_0():
    assert parse_trigger(b'{"pipeline": "echo"}', "json", URI).priority == 0
    assert parse_trigger(b'{"pipeline": "echo", "priority": 9}', "json", URI).priority == 9
