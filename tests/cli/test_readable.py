"""What makes the CLI read well: colour only for a person, "did you mean", syntax errors shown where they are."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from relaycli.main import main
from relaycli.output import Paint, colour_wanted, table
from tests.cli.support import Ran, run
from tests.conftest import CATALOG


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "wanted"),
    [
        (Terminal(), {}, True),
        (io.StringIO(), {}, False),  # a pipe or a file: the words alone
        (Terminal(), {"NO_COLOR": "1"}, False),
        (Terminal(), {"TERM": "dumb"}, False),
        (io.StringIO(), {"FORCE_COLOR": "1"}, True),
        (io.StringIO(), {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),  # NO_COLOR wins
    ],
    ids=["terminal", "pipe", "no-color", "dumb", "forced", "no-color-wins"],
)
def test_colour_only_for_a_person_at_a_terminal(stream: io.StringIO, env: dict[str, str], wanted: bool):
    assert colour_wanted(stream, env) is wanted


def test_a_coloured_column_stays_aligned():
    paint = Paint(True)
    shown = table(["KEY", "STATE", "AGE"], [["a", "succeeded", "1s"], ["bb", "failed", "2s"]], {1: paint.state})
    plain = shown.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert plain.splitlines() == ["KEY  STATE      AGE", "a    succeeded  1s", "bb   failed     2s"]
    assert "\x1b[32msucceeded\x1b[0m" in shown and "\x1b[31mfailed\x1b[0m" in shown


def test_states_and_problems_are_coloured_when_asked(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: echo\nparameters: {mesage: hi}\n")
    ran = run(capsys, ["validate", str(path)], env={"RELAY_CATALOG_URI": str(CATALOG), "FORCE_COLOR": "1"})
    assert ran.out.startswith("\x1b[31minvalid\x1b[0m: 2 problems")
    assert "  \x1b[31mparameters.mesage\x1b[0m: expected" in ran.out


def test_a_mistyped_pipeline_gets_the_likely_one_and_the_catalog(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: ecoh\nparameters: {}\n")
    lines = cli("validate", str(path)).out.splitlines()
    problem = lines.index(next(line for line in lines if line.startswith("  pipeline: ")))
    assert lines[problem + 1] == "    did you mean echo? (the catalog has echo)"


def test_a_mistyped_parameter_gets_the_likely_one(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: echo\nparameters: {mesage: hi, count: 2, zzz: 1}\n")
    lines = cli("validate", str(path)).out.splitlines()
    mistyped = next(i for i, line in enumerate(lines) if line.startswith("  parameters.mesage: "))
    assert lines[mistyped + 1] == "    did you mean message?"
    unlike = next(i for i, line in enumerate(lines) if line.startswith("  parameters.zzz: "))
    assert not lines[unlike + 1].startswith("    did you mean")  # nothing close: no guess


def test_a_yaml_syntax_error_points_at_its_line_and_column(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: echo\nparameters:\n  message: [a, b\n  count: 2\n")
    lines = cli("validate", str(path)).out.splitlines()
    assert lines[0] == "invalid: 1 problem (invalid_trigger)"
    assert lines[2:6] == [
        "    line 4, column 8:",
        "    3 |   message: [a, b",
        "    4 |   count: 2",
        "      |        ^",  # under the column, on a line of its own
    ]


def test_a_json_syntax_error_points_at_its_line_and_column(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text('{"pipeline": "echo",\n "parameters": {"message": "hi",}}\n')
    lines = cli("validate", str(path)).out.splitlines()
    assert lines[2:5] == [
        "    line 2, column 33:",
        '    1 | {"pipeline": "echo",',
        '    2 |  "parameters": {"message": "hi",}}',
    ]
    assert lines[5] == "      |" + " " * 33 + "^"


def test_help_lists_upload(capsys: pytest.CaptureFixture[str]):
    assert main(["upload", "--help"]) == 0
    assert "relay upload plate-4.json gs://lab-data/assay/2026-11-22/" in capsys.readouterr().out
