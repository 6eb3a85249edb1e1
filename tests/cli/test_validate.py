from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.config import DEFAULT_CATALOG
from tests.cli.support import ECHO, Ran

NOT_CHECKED = "policy  not checked: say where the trigger comes from (--bucket B [--name N] or --topic T)\n"


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_a_valid_file_names_its_pipeline_and_parameter_count(cli: Callable[..., Ran], tmp_path: Path):
    ran = cli("validate", write(tmp_path, "t.json", ECHO))
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == "valid: echo with 2 parameters\n" + NOT_CHECKED  # nothing says where it would come from


def test_yaml_is_read_as_relay_reads_it(cli: Callable[..., Ran], tmp_path: Path):
    path = write(tmp_path, "t.yml", "pipeline: echo\nparameters:\n  message: 2026-11-21\n")
    assert cli("validate", path).out == "valid: echo with 1 parameter\n" + NOT_CHECKED  # the date stays a string


def test_every_problem_of_the_document_is_listed(cli: Callable[..., Ran], tmp_path: Path):
    document = {"pipeline": "Echo", "parameters": {"run_key": "x"}, "labels": {"team": 3}, "extra": 1}
    ran = cli("validate", write(tmp_path, "bad.json", document))
    assert ran.code == 1 and ran.err == ""
    lines = ran.out.splitlines()
    assert lines[0] == "invalid: 4 problems (invalid_trigger)"
    assert (
        "  extra: expected one of the keys version, pipeline, parameters, run_key, labels, priority, retries, "
        "chain, found an unknown key" in lines
    )
    assert any(line.startswith("  pipeline: expected a pipeline name: a lower-case letter") for line in lines)
    assert "  parameters.run_key: expected no value (Relay fills it), found a value" in lines
    assert any(line.startswith("  labels.team: expected a label value") for line in lines)


def test_parameters_are_checked_against_the_pipeline_inputs(cli: Callable[..., Ran], tmp_path: Path):
    document = {"pipeline": "echo", "parameters": {"count": "two", "colour": "red"}}
    ran = cli("validate", write(tmp_path, "p.json", document))
    assert ran.code == 1
    assert ran.out.splitlines() == [
        "invalid: 3 problems (invalid_parameters)",
        "  parameters.count: expected an integer, found string 'two'",
        "  parameters.colour: expected a parameter of echo (count, enabled, fail, items, message, options, ratio), "
        "found an unknown name",
        "  parameters.message: expected a string, found nothing",
        NOT_CHECKED.strip(),
    ]


def test_an_unknown_pipeline_names_the_catalog(cli: Callable[..., Ran], tmp_path: Path):
    ran = cli("validate", write(tmp_path, "u.json", {"pipeline": "nope"}), "--json")
    assert ran.code == 1
    assert ran.json() == {
        "file": str(tmp_path / "u.json"),
        "valid": False,
        "pipeline": "nope",
        "parameters": 0,
        "code": "unknown_pipeline",
        "problems": [
            {
                "field": "pipeline",
                "expected": f"a pipeline in the catalog {Path(__file__).parents[1] / 'data' / 'catalog'}",
                "found": f"'nope' (no {Path(__file__).parents[1] / 'data' / 'catalog' / 'nope.yaml'})",
            }
        ],
        "policy": None,
    }


def test_json_of_a_valid_file(cli: Callable[..., Ran], tmp_path: Path):
    ran = cli("validate", write(tmp_path, "t.json", ECHO), "--json")
    assert ran.code == 0
    assert ran.json() == {
        "file": str(tmp_path / "t.json"),
        "valid": True,
        "pipeline": "echo",
        "parameters": 2,
        "code": None,
        "problems": [],
        "policy": None,  # not checked: where it would come from is unknown
    }


def test_the_repo_catalog_by_default(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    from tests.cli.support import run

    readme_trigger = """\
pipeline: push
parameters:
  sources: [gs://lab-data/assay/2026-11-21/]
  destination: {kind: kaggle, dataset: lab/assay, key: secret://kaggle-key}
run_key: nightly-2026-11-21
labels: {team: assay}
"""
    ran = run(capsys, ["validate", write(tmp_path, "push.yaml", readme_trigger)], env={})
    assert (ran.code, ran.out) == (0, "valid: push with 2 parameters\n" + NOT_CHECKED)
    ran = run(capsys, ["validate", write(tmp_path, "r.json", {"pipeline": "echo"})], env={})
    assert ran.code == 1 and f"a pipeline in the catalog {DEFAULT_CATALOG}" in ran.out


def test_format_flag_for_files_without_a_trigger_suffix(cli: Callable[..., Ran], tmp_path: Path):
    path = write(tmp_path, "body.txt", "pipeline: echo\nparameters: {message: hi}\n")
    refused = cli("validate", path)
    assert refused.code == 2 and refused.out == ""
    assert refused.err == (
        f"relay validate: {path}: expected a trigger name ending in .json, .yaml or .yml "
        "(Relay skips other names), found .txt\n"
    )
    assert cli("validate", path, "--format", "yaml").out == "valid: echo with 1 parameter\n" + NOT_CHECKED


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["missing.json"], "relay validate: missing.json: expected a trigger file, found no such file\n"),
        (["."], "relay validate: .: expected a trigger file, found a folder\n"),
        (
            ["t.json", "--catalog", "/no/such/catalog"],
            "relay validate: --catalog: expected gs://bucket/prefix or a local folder of compiled pipeline specs "
            "<name>.yaml, found no folder /no/such/catalog\n",
        ),
        (["t.json", "--format", "toml"], "relay validate: argument --format: invalid choice: 'toml'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli: Callable[..., Ran], tmp_path: Path, monkeypatch, argv, error):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "t.json", ECHO)
    ran = cli("validate", *argv)
    assert ran.code == 2 and ran.out == ""
    assert ran.err.startswith(error) and ran.err.count("\n") == 1 and "Traceback" not in ran.err


def test_a_chain_is_checked_as_the_functions_check_it(cli: Callable[..., Ran], tmp_path: Path):
    chain = [{"pipeline": "echo", "parameters": {"message": "{outputs.Missing}", "colour": "red"}}]
    ran = cli("validate", write(tmp_path, "chain.json", {**ECHO, "chain": chain}))
    assert ran.code == 1
    assert ran.out.splitlines()[:3] == [
        "invalid: 2 problems (invalid_chain)",
        "  chain[0].parameters.message: expected an output echo declares (Output), found {outputs.Missing}",
        "  chain[0].parameters.colour: expected a parameter of echo (count, enabled, fail, items, message, options, "
        "ratio), found an unknown name",
    ]
    good = [{"pipeline": "echo", "parameters": {"message": "after {outputs.Output}"}}]
    assert cli("validate", write(tmp_path, "good.json", {**ECHO, "chain": good})).code == 0
