"""`make bench` (flow part) runs end to end on small counts: every row of its table, and the counts the fakes
behind them hold the queue to: never more runs in flight at the backend than the cap, no creation refused for a
full backend, every trigger run exactly once under the cap and under backpressure. No timing is compared with
anything: the timed figures only have to be there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.flow import QUICK
from devstack import fake_gcs_available

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(?:\.\d+)?"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def output() -> str:
    unavailable = fake_gcs_available()
    if unavailable:
        pytest.skip(unavailable)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.flow", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _row(output: str, label: str) -> list[str]:
    match = re.search(rf"^  {re.escape(label)} +(.*)$", output, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{output}"
    return match.group(1).split()


def test_the_cap_holds_at_the_backend_and_every_trigger_runs_once(output: str) -> None:
    peak, cap = _row(output, "cap: most runs in flight at the backend")[:2]
    assert int(cap) == QUICK.cap and 1 <= int(peak) <= QUICK.cap
    for label in ("cap: creations refused for a full backend", "cap: duplicate runs", "cap: missing runs"):
        assert _row(output, label)[0] == "0", output


def test_backpressure_through_both_entry_points_runs_every_trigger_once(output: str) -> None:
    assert _row(output, "backpressure: duplicate runs")[0] == "0"
    # Counted after the reconcile tick that follows the deliveries, as deployed; how many it launched is a figure.
    assert int(_row(output, "backpressure: runs left for the tick")[0]) >= 0
    assert _row(output, "backpressure: missing runs")[0] == "0"
    deliveries = re.search(r"^backpressure: (\d+) deliveries answered .* creations admitted (\d+)", output, re.M)
    assert deliveries and int(deliveries[1]) == 2 * QUICK.backpressure and int(deliveries[2]) == QUICK.backpressure


def test_every_timed_figure_has_relay_baseline_and_ratio_with_its_target(output: str) -> None:
    for label, target in (
        ("cap: drain s, vs the backend's pace", r"ratio <= 1\.10"),
        ("cap: CPU ms/trigger, vs uncapped", r"ratio <= 1\.20"),
        ("backpressure: drain s, vs N/rate", r"ratio <= 1\.30"),
        ("backpressure: admission used while waiting", r"ratio > 0\.80"),
    ):
        assert re.search(rf"^  {re.escape(label)} +{NUMBER} +{NUMBER} +{NUMBER}  {target} +(yes|NO)$", output, re.M), (
            label,
            output,
        )
    ticks = re.search(rf"^cap: (\d+) reconcile ticks, median {NUMBER} s, p99 {NUMBER} s", output, re.M)
    assert ticks and int(ticks[1]) >= 1, output


def test_every_runs_end_reaches_on_run_ended_on_both_sides(output: str) -> None:
    capped = re.search(r"^cap: \d+ deliveries answered .*; (\d+) run ends delivered to on_run_ended$", output, re.M)
    assert capped and int(capped[1]) == QUICK.cap_triggers, output
    uncapped = re.search(r"^uncapped: .*; (\d+) run ends delivered$", output, re.M)
    assert uncapped and int(uncapped[1]) == QUICK.baseline, output
