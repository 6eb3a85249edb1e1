"""Compiled packages as the catalog reads them, and what a trigger's parameters are checked against."""

from __future__ import annotations

import math

import pytest

from relay.catalog import Catalog, PipelineDefinition, check_parameters, parse_pipeline_package, run_parameters
from relay.errors import InvalidTriggerError
from tests.fakes import MemoryBlobStore

INT64 = "an integer from -9223372036854775808 to 9223372036854775807 (KFP integers are int64)"


def package(parameters: str = "", *, before: str = "", after: str = "") -> bytes:
    """A compiled pipeline's YAML: optional documents around the PipelineSpec, `parameters` as its root inputs."""
    inputs = f"  inputDefinitions:\n    parameters:\n{parameters}" if parameters else ""
    spec = f"pipelineInfo:\n  name: p\nroot:\n  dag: {{}}\n{inputs}"
    return "---\n".join(part for part in (before, spec, after) if part).encode()


def pipeline(**types: str) -> PipelineDefinition:
    """A pipeline whose root inputs are all required, of the given types."""
    lines = "".join(f"      {name}:\n        parameterType: {kind}\n" for name, kind in types.items())
    return parse_pipeline_package("p", "gs://c/p.yaml", package(lines))


def found(parameters: dict[str, object], **types: str) -> list[str]:
    return [str(problem) for problem in check_parameters(pipeline(**types), parameters)]


def test_a_package_is_its_pipeline_spec_whatever_documents_surround_it():
    raw = package(
        "      n:\n        parameterType: NUMBER_INTEGER\n",
        before="just text\n",
        after="platforms:\n  kubernetes: {}\n",
    )
    parsed = parse_pipeline_package("p", "gs://c/p.yaml", raw)
    assert (parsed.name, parsed.uri, parsed.package) == ("p", "gs://c/p.yaml", raw)
    assert parsed.spec["pipelineInfo"] == {"name": "p"} and "platforms" not in parsed.spec
    assert list(parsed.inputs) == ["n"] and parsed.inputs["n"].type == "NUMBER_INTEGER"


@pytest.mark.parametrize(
    "raw",
    [b"", b"pipelineInfo: {name: p}\n", b"root: {dag: {}}\n", b"- pipelineInfo\n- root\n", b"platforms: {}\n"],
)
def test_a_package_without_a_pipeline_spec_is_refused_with_where_it_came_from(raw: bytes):
    with pytest.raises(ValueError) as caught:
        parse_pipeline_package("p", "gs://c/p.yaml", raw)
    assert str(caught.value) == (
        "gs://c/p.yaml: expected a compiled KFP v2 pipeline spec, found no pipelineInfo/root document"
    )


def test_a_pipeline_without_root_inputs_takes_no_parameters():
    assert parse_pipeline_package("p", "u", package()).inputs == {}
    no_parameters = b"pipelineInfo: {name: p}\nroot:\n  inputDefinitions: {}\n"
    assert parse_pipeline_package("p", "u", no_parameters).inputs == {}
    assert found({"x": 1}) == ["parameters.x: expected a parameter of p (none), found an unknown name"]


def test_an_input_is_required_unless_it_has_a_default_or_is_optional():
    parsed = parse_pipeline_package(
        "p",
        "u",
        package(
            "      plain: {parameterType: STRING}\n"
            "      defaulted: {parameterType: STRING, defaultValue: x}\n"
            "      optional: {parameterType: NUMBER_INTEGER, isOptional: true}\n"
            "      not_optional: {parameterType: STRING, isOptional: false}\n"
            "      untyped: {}\n"
        ),
    )
    assert {name: (spec.type, spec.required) for name, spec in parsed.inputs.items()} == {
        "plain": ("STRING", True),
        "defaulted": ("STRING", False),
        "optional": ("NUMBER_INTEGER", False),
        "not_optional": ("STRING", True),
        "untyped": ("STRING", True),  # KFP's default parameter type
    }
    assert [str(p) for p in check_parameters(parsed, {})] == [
        "parameters.plain: expected a string, found nothing",
        "parameters.not_optional: expected a string, found nothing",
        "parameters.untyped: expected a string, found nothing",
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2**63 - 1, None),
        (-(2**63), None),
        (2**63, f"expected {INT64}, found number {2**63}"),
        (-(2**63) - 1, f"expected {INT64}, found number {-(2**63) - 1}"),
        (2.0, f"expected {INT64}, found number 2.0"),
        (2.5, "expected an integer, found number 2.5"),
        (math.inf, "expected an integer, found number inf"),
        (False, "expected an integer, found boolean false"),
    ],
)
def test_integers_are_int64(value: object, problem: str | None):
    assert found({"n": value}, n="NUMBER_INTEGER") == ([f"parameters.n: {problem}"] if problem else [])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1, None),
        (-0.5, None),
        (math.inf, "expected a number, found number inf"),
        (-math.inf, "expected a number, found number -inf"),
        (math.nan, "expected a number, found NaN"),
        (True, "expected a number, found boolean true"),
        ("1.5", "expected a number, found string '1.5'"),
    ],
)
def test_numbers_are_finite(value: object, problem: str | None):
    assert found({"x": value}, x="NUMBER_DOUBLE") == ([f"parameters.x: {problem}"] if problem else [])


@pytest.mark.parametrize(
    ("kind", "good", "bad", "expected"),
    [
        ("STRING", "s", 1, "a string"),
        ("BOOLEAN", True, 0, "a boolean"),
        ("LIST", [], (), "a list"),
        ("STRUCT", {}, [], "a mapping"),
    ],
)
def test_each_type_takes_its_own_values(kind: str, good: object, bad: object, expected: str):
    assert found({"x": good}, x=kind) == []
    assert found({"x": bad}, x=kind)[0].startswith(f"parameters.x: expected {expected}, found ")


def test_an_input_of_a_type_relay_does_not_know_takes_no_value_and_names_its_type():
    assert found({"x": "anything"}, x="TASK_FINAL_STATUS") == [
        "parameters.x: expected TASK_FINAL_STATUS, found string 'anything'"
    ]
    assert found({}, x="TASK_FINAL_STATUS") == ["parameters.x: expected TASK_FINAL_STATUS, found nothing"]


def test_reserved_parameters_are_relay_s_to_fill_never_the_trigger_s():
    types = {"a": "STRING", "run_key": "STRING", "results_uri": "STRING", "tenant": "STRING"}
    # Required reserved inputs are not missing: Relay fills them at launch.
    assert found({"a": "x"}, **types) == []
    assert found({"a": "x", "run_key": "mine", "tenant": "other"}, **types) == [
        "parameters.run_key: expected a parameter of p (a), found an unknown name",
        "parameters.tenant: expected a parameter of p (a), found an unknown name",
    ]
    assert found({"b": 1, "a": "x", "z": "y"}, z="STRING", a="STRING") == [
        "parameters.b: expected a parameter of p (a, z), found an unknown name"
    ]
    assert found({"b": 1}, run_key="STRING") == [
        "parameters.b: expected a parameter of p (none), found an unknown name"
    ]


def test_a_secret_reference_must_be_well_formed_where_a_string_goes():
    assert found({"s": "secret://projects/p/secrets/s/versions/latest"}, s="STRING") == []
    assert found({"s": "secret://"}, s="STRING") == [
        "parameters.s: expected secret://NAME or secret://projects/P/secrets/S[/versions/V], found 'secret://'"
    ]


def test_a_run_gets_the_reserved_parameters_its_pipeline_declares():
    every = pipeline(m="STRING", run_key="STRING", results_uri="STRING", tenant="STRING")
    filled = run_parameters(every, {"m": "x"}, run_key="k", results_uri="gs://r", tenant="assay")
    assert filled == {"m": "x", "run_key": "k", "results_uri": "gs://r", "tenant": "assay"}
    assert every.declares_reserved == ("run_key", "results_uri", "tenant")
    assert run_parameters(every, {}, run_key="k", results_uri="gs://r")["tenant"] == ""
    only_key = pipeline(run_key="STRING")
    assert run_parameters(only_key, {"m": "x"}, run_key="k", results_uri="gs://r", tenant="t") == {
        "m": "x",
        "run_key": "k",
    }


def test_the_policy_beside_the_pipelines_is_never_a_pipeline():
    store = MemoryBlobStore()
    store.write("gs://c/policy.yaml", package())
    store.write("gs://c/p.yaml", package())
    catalog = Catalog(store, "gs://c")
    assert catalog.get("p", trigger_uri="t").uri == "gs://c/p.yaml"
    with pytest.raises(InvalidTriggerError) as caught:
        catalog.get("policy", trigger_uri="gs://t/x.json")
    assert (caught.value.code, caught.value.uri) == ("unknown_pipeline", "gs://t/x.json")
    assert [str(p) for p in caught.value.problems] == [
        "pipeline: expected a pipeline in the catalog, found 'policy', which it does not hold"
    ]


def test_each_name_is_read_once_and_kept_apart():
    store = MemoryBlobStore()
    store.write("gs://c/a.yaml", package("      x: {parameterType: STRING}\n"))
    store.write("gs://c/b.yaml", package())
    catalog = Catalog(store, "gs://c")
    a, b = catalog.get("a", trigger_uri="t"), catalog.get("b", trigger_uri="t")
    assert (a.name, list(a.inputs), b.name, list(b.inputs)) == ("a", ["x"], "b", [])
    store.delete("gs://c/a.yaml")
    assert catalog.get("a", trigger_uri="t") is a
