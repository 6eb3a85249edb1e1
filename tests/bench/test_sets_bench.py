"""`make bench` (sets part) runs end to end on small counts: every row of its table, and exactly one run per set
with all its objects. No timing is compared with anything: the figures only have to be there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sets import QUICK

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def output() -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.sets", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def row(output: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)} +(.*)$", output, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{output}"
    return match.group(1)


def test_every_set_is_exactly_one_run_with_all_its_objects(output: str):
    assert (
        row(output, "runs created, vs sets") == f"{QUICK.sets} vs {QUICK.sets} ({QUICK.sets} sets with exactly one run)"
    )
    assert row(output, "sets whose run has all their objects") == f"{QUICK.sets} of {QUICK.sets}"
    assert row(output, "single path runs, vs objects") == f"{QUICK.single} vs {QUICK.single}"


@pytest.mark.parametrize("label", ["wall ms/object, sets vs single path", "CPU ms/object, sets vs single path"])
def test_the_costs_per_object_are_printed_as_a_ratio(output: str, label: str):
    assert re.fullmatch(r"\d+\.\d+ vs \d+\.\d+ \(\d+\.\d+x\)", row(output, label))
