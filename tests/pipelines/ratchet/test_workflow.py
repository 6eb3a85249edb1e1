"""The seed's workflow format: documented and actually-used key names, Relay's optional keys, clear rejections."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.ratchet.workflow import (
    DEFAULT_TIMEOUT,
    BenchmarkTest,
    WorkflowError,
    load_workflow,
    parse_workflow,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "pipelines" / "examples" / "ratchet" / "workflow.json"

# The seed README's hello world, as written there.
HELLO_WORLD: dict[str, Any] = {
    "source_info": {"cluster_address": "https://api.algorithmia.com"},
    "test_info": {
        "entrypoint": "hello_world",
        "tests": [{"name": "basic test", "payload": "Algorithmia", "timeout": 10}],
    },
    "algorithms": [
        {"name": "hello_world", "data_files": [], "environment_name": "Python 3.7", "test_payload": "Algorithmia"}
    ],
}


def changed(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the hello world with the value at a dotted path (list indexes as numbers) set, or removed."""
    document = copy.deepcopy(base or HELLO_WORLD)
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _REMOVE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return document


_REMOVE = object()


def test_the_seed_readme_workflow_parses_as_written():
    workflow = parse_workflow(HELLO_WORLD, default_name="hello_world")
    assert workflow.name == "hello_world" and workflow.entrypoint == "hello_world"
    assert workflow.source_cluster == "https://api.algorithmia.com" and not workflow.run_only
    (algorithm,) = workflow.algorithms
    assert (algorithm.name, algorithm.environment, algorithm.code, algorithm.test_payload) == (
        "hello_world",
        "Python 3.7",
        None,
        "Algorithmia",
    )
    assert workflow.tests == (BenchmarkTest("basic test", "Algorithmia", timeout=10.0),)


def test_the_example_workflow_parses_with_both_key_spellings():
    workflow = load_workflow(EXAMPLE.read_bytes(), where=str(EXAMPLE), default_name="workflow")
    assert workflow.name == "text-summary"
    assert [a.name for a in workflow.algorithms] == ["tokenize", "count_words", "first_sentence", "summarize"]
    tokenize, count_words, *_ = workflow.algorithms
    assert (tokenize.code, tokenize.environment) == ("algorithms/tokenize/", "python3")  # code_path, language
    assert (count_words.code, count_words.environment) == ("algorithms/count_words/", "Python 3.11")  # code, env
    short, document = workflow.tests
    assert (short.repeat, short.slack, short.timeout, short.tolerance) == (3, 0.25, 5.0, None)
    assert document.payload == {"document": "data://.my/<algo>/report.txt"}


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("run_only", True, ("run_only", True)),
        ("algorithms.0.code_path", "data://.my/<algo>/hello.tar.gz", ("code", "data://.my/<algo>/hello.tar.gz")),
        ("algorithms.0.code", "algorithms/hello_world/", ("code", "algorithms/hello_world/")),
        ("algorithms.0.language", "Python 3.7", ("environment", "Python 3.7")),  # both keys, same value
        ("algorithms.0.timeout", 3000, ("timeout", 3000.0)),
        ("algorithms.0.data_files", ["data://.my/<algo>/model.bin"], ("data_files", ("data://.my/<algo>/model.bin",))),
        ("test_info.tests.0.repeat", 5, ("repeat", 5)),
        ("test_info.tests.0.tolerance", 0.5, ("tolerance", 0.5)),
        ("test_info.tests.0.slack", 0.2, ("slack", 0.2)),
        ("test_info.tests.0.timeout", _REMOVE, ("timeout", DEFAULT_TIMEOUT)),
        ("name", "nightly.v2", ("name", "nightly.v2")),
    ],
)
def test_optional_keys(path: str, value: Any, expected: tuple[str, Any]):
    workflow = parse_workflow(changed(path, value), default_name="hello")
    field, want = expected
    holder = (
        workflow
        if field in ("run_only", "name")
        else workflow.tests[0]
        if path.startswith("test_info")
        else workflow.algorithms[0]
    )
    assert getattr(holder, field) == want


def test_no_test_info_means_no_benchmark():
    document = changed("test_info", _REMOVE)
    workflow = parse_workflow(document, default_name="hello")
    assert workflow.entrypoint is None and workflow.tests == ()


TWO = changed(
    "algorithms",
    [
        {"name": "a", "environment_name": "python3", "test_payload": 1},
        {"name": "b", "environment_name": "python3", "test_payload": 2, "depends_on": ["a"]},
    ],
    changed("test_info.entrypoint", "b"),
)


@pytest.mark.parametrize(
    ("document", "field", "expected", "found"),
    [
        pytest.param([], "workflow", "an object", "[]", id="not-an-object"),
        pytest.param(changed("extra", 1), "workflow", "only the keys", "unknown key(s) extra", id="unknown-top-key"),
        pytest.param(
            changed("algorithms.0.codepath", "x"), "algorithms[0]", "only the keys", "codepath", id="unknown-algo-key"
        ),
        pytest.param(
            changed("test_info.tests.0.timout", 5),
            "test_info.tests[0]",
            "only the keys",
            "timout",
            id="unknown-test-key",
        ),
        pytest.param(
            changed("source_info.address", "x"), "source_info", "only the keys", "address", id="unknown-source-key"
        ),
        pytest.param(changed("algorithms", []), "algorithms", "a non-empty list", "[]", id="no-algorithms"),
        pytest.param(
            changed("algorithms", [HELLO_WORLD["algorithms"][0]] * 2),
            "algorithms[1].name",
            "a name no other algorithm has",
            "a second 'hello_world'",
            id="duplicate-algorithm",
        ),
        pytest.param(
            changed("test_info.tests", [{"name": "t", "payload": 1}, {"name": "t", "payload": 2}]),
            "test_info.tests[1].name",
            "a name no other test has",
            "a second 't'",
            id="duplicate-test",
        ),
        pytest.param(
            changed("test_info.entrypoint", "goodbye"),
            "test_info.entrypoint",
            "the name of one of the algorithms (hello_world)",
            '"goodbye"',
            id="entrypoint-not-an-algorithm",
        ),
        pytest.param(
            changed("test_info.tests.0.timeout", 3001),
            "test_info.tests[0].timeout",
            "at most 3000",
            "3001",
            id="timeout-over-3000",
        ),
        pytest.param(
            changed("test_info.tests.0.timeout", 0), "test_info.tests[0].timeout", "more than 0", "0", id="timeout-0"
        ),
        pytest.param(
            changed("algorithms.0.timeout", True), "algorithms[0].timeout", "seconds", "true", id="timeout-bool"
        ),
        pytest.param(
            changed("algorithms.0.environment_name", _REMOVE),
            "algorithms[0].environment_name|language",
            "one of environment_name or language",
            "neither",
            id="no-environment",
        ),
        pytest.param(
            changed("algorithms.0.language", "R"),
            "algorithms[0].environment_name|language",
            "both with the same value",
            "Python 3.7",
            id="environment-disagrees",
        ),
        pytest.param(
            changed("algorithms.0.environment", "python3"),
            "algorithms[0].environment_name|environment",
            "both with the same value",
            "Python 3.7",
            id="2021-environment-disagrees",
        ),
        pytest.param(
            changed("algorithms.0.language", 3, changed("algorithms.0.environment", "Python 3.7")),
            "algorithms[0].language",
            "a non-empty string",
            "3",
            id="2021-language-not-a-string",
        ),
        pytest.param(
            changed("algorithms.0.data_files", ["data://.my/a/model.bin", "data://.my/<algo>/x/model.bin"]),
            "algorithms[0].data_files[1]",
            "data files of distinct names: each lands at data://.my/hello_world/<file name>",
            "data://.my/<algo>/x/model.bin and data://.my/a/model.bin",
            id="data-files-land-on-each-other",
        ),
        pytest.param(
            changed("algorithms.0.test_payload", _REMOVE),
            "algorithms[0].test_payload",
            "the payload that validates",
            "nothing",
            id="no-test-payload",
        ),
        pytest.param(
            changed("test_info.tests.0.payload", _REMOVE),
            "test_info.tests[0].payload",
            "the payload sent to the entrypoint",
            "nothing",
            id="no-test-payload-in-test",
        ),
        pytest.param(
            changed("algorithms.0.name", "hello-world"),
            "algorithms[0].name",
            "an algorithm name matching",
            '"hello-world"',
            id="bad-algorithm-name",
        ),
        pytest.param(
            changed("algorithms.0.data_files", ["data://someone/c/f"]),
            "algorithms[0].data_files[0]",
            "data://.my/<collection>/<file>",
            "data://someone/c/f",
            id="data-file-not-generic",
        ),
        pytest.param(
            changed("algorithms.0.data_files", ["data://.my/c/../../etc/passwd"]),
            "algorithms[0].data_files[0]",
            "data://.my/<collection>/<file>",
            "etc/passwd",
            id="data-file-escapes",
        ),
        pytest.param(
            changed("test_info.tests.0.repeat", 0), "test_info.tests[0].repeat", "from 1 to 100", "0", id="repeat-0"
        ),
        pytest.param(
            changed("test_info.tests.0.tolerance", -0.1),
            "test_info.tests[0].tolerance",
            "at least 0",
            "-0.1",
            id="negative-tolerance",
        ),
        pytest.param(changed("run_only", "yes"), "run_only", "true or false", '"yes"', id="run-only-not-bool"),
        pytest.param(changed("name", "a/b"), "name", "a workflow name", '"a/b"', id="name-not-a-segment"),
        pytest.param(
            changed("algorithms.1.depends_on", ["c"], TWO),
            "algorithms[1].depends_on",
            "algorithms listed before b (dependencies first): a",
            '"c"',
            id="unknown-dependency",
        ),
        pytest.param(
            changed("algorithms.0.depends_on", ["b"], TWO),
            "algorithms[0].depends_on",
            "algorithms listed before a (dependencies first): none",
            '"b"',
            id="dependency-listed-later",
        ),
    ],
)
def test_rejections_name_the_field_what_was_expected_and_what_was_found(
    document: Any, field: str, expected: str, found: str
):
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(document, default_name="hello")
    matching = [p for p in caught.value.problems if p.field == field]
    assert matching, f"no problem for {field}: {caught.value}"
    assert expected in matching[0].expected and found in matching[0].found, str(matching[0])
    assert str(matching[0]) in str(caught.value)


def test_every_problem_is_reported_at_once():
    document = changed("test_info.tests.0.timeout", 9999, changed("algorithms.0.environment_name", _REMOVE))
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(document, default_name="hello")
    assert {p.field for p in caught.value.problems} == {
        "test_info.tests[0].timeout",
        "algorithms[0].environment_name|language",
    }


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"algorithms": [], "algorithms": []}', "duplicate key 'algorithms'"),
        (b'{"run_only": NaN}', "NaN is not a JSON number"),
        (b"\xff", "unreadable JSON"),
    ],
)
def test_a_file_must_be_strict_json(data: bytes, fragment: str):
    with pytest.raises(WorkflowError) as caught:
        load_workflow(data, where="gs://b/w.json", default_name="w")
    assert fragment in str(caught.value) and "gs://b/w.json" in str(caught.value)


def test_the_default_name_must_be_a_path_segment_too():
    with pytest.raises(WorkflowError, match="name: expected a workflow name"):
        parse_workflow(json.loads(json.dumps(HELLO_WORLD)), default_name="")


@pytest.mark.parametrize(
    ("keys", "environment"),
    [
        ({"environment": "python3", "language": "python-pip-old"}, "python3"),  # the seed's April 2021 hello.json
        ({"environment": "tensorflow-1.14"}, "tensorflow-1.14"),  # its DeepFashion then: no language
        ({"environment_name": "Python 3.7", "environment": "Python 3.7", "language": "python-anaconda"}, "Python 3.7"),
    ],
)
def test_the_2021_environment_key_is_accepted_and_its_keys_kept_as_written(keys: dict[str, str], environment: str):
    document = changed("algorithms.0.environment_name", _REMOVE)
    document["algorithms"][0].update(keys)
    (algorithm,) = parse_workflow(document, default_name="hello").algorithms
    assert algorithm.environment == environment
    assert dict(algorithm.declared) == keys
