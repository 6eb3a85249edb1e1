"""`make bench` (launch part) runs end to end on small counts: every row of its table, the counts behind them, and
exactly one run per trigger for Relay. No timing is compared with anything: the figures only have to be there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.launch import QUICK
from devstack import fake_gcs_available

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(?:\.\d+)?"
ROWS = (
    "warm median ms, relay vs seed",
    "warm p99 ms, relay vs seed",
    "warm median ms, relay vs floor",
    "warm p99 ms, relay vs floor",
    "  least reachable: floor + framework",
    "  relay less framework, vs floor",
    "warm median ms, relay vs session floor",
    "cold start median ms, relay vs seed",
    "burst triggers/s, relay vs seed",
    "burst CPU ms/trigger, relay vs seed",
    "burst duplicate runs, relay vs seed",
    "backpressure drain s, vs N/rate",
    "backpressure req/s saturated, vs rate",
)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def output() -> str:
    unavailable = fake_gcs_available()
    if unavailable:
        pytest.skip(unavailable)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.launch", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _row(output: str, label: str) -> list[str]:
    match = re.search(rf"^  {re.escape(label)} +(.*)$", output, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{output}"
    return match.group(1).split()


def test_every_figure_has_relay_baseline_and_ratio(output: str) -> None:
    for label in ROWS:
        relay, baseline, *rest = _row(output, label)
        assert re.fullmatch(NUMBER, relay) and re.fullmatch(NUMBER, baseline), (label, output)
        if label != "burst duplicate runs, relay vs seed":
            assert rest and re.fullmatch(NUMBER, rest[0]), (label, output)  # the ratio
    # Targets are printed with a verdict, never asserted.
    for floor, target in (("floor", r"1\.30"), ("session floor", r"1\.00")):
        assert re.search(rf"^  warm median ms, relay vs {floor} .* ratio <= {target} +(yes|NO)$", output, re.MULTILINE)


def test_relay_makes_exactly_one_run_per_trigger_and_the_seed_one_per_delivery(output: str) -> None:
    relay, seed = _row(output, "burst duplicate runs, relay vs seed")[:2]
    assert relay == "0"
    assert int(seed) == QUICK.seed_burst  # each trigger delivered twice: the seed runs it twice
    assert _row(output, "backpressure duplicate runs")[0] == "0"
    # Counted after the reconcile tick that follows the deliveries, as deployed; how many it launched is a figure.
    assert int(_row(output, "backpressure runs left for the tick")[0]) >= 0
    assert _row(output, "backpressure missing runs")[0] == "0"
    burst = re.search(
        r"^  relay +(\d+) triggers, .* runs (\d+), duplicates 0, missing 0; outcomes: (.*)$", output, re.M
    )
    assert burst, output
    triggers, runs, outcomes = int(burst[1]), int(burst[2]), burst[3]
    assert triggers == runs == QUICK.burst
    assert f"duplicate {QUICK.burst}" in outcomes and f"launched {QUICK.burst}" in outcomes


def test_work_per_warm_event_as_the_fakes_counted_it(output: str) -> None:
    # Relay: one KFP call and a cached token; the seed: healthz, the experiment lookup, the run, and a token GET.
    assert re.search(r"^  relay +KFP: POST /runs \u00d71; metadata server requests 0$", output, re.M), output
    assert re.search(
        r"^  seed +KFP: GET /experiments \u00d71, GET /healthz \u00d71, POST /runs \u00d71; "
        r"metadata server requests 1$",
        output,
        re.M,
    ), output
    for floor in ("floor", "session"):
        assert re.search(rf"^  {floor} +KFP: POST /runs \u00d71; metadata server requests 0$", output, re.M), output
    # The framework's own cost is measured with a function that calls nothing.
    assert re.search(r"^  noop +KFP: none; metadata server requests 0$", output, re.M), output
    records = re.search(r"launch records written by relay: (\d+) for (\d+) warm events", output)
    assert records and records[1] == records[2], output


def test_cold_start_and_timing_tables_are_complete(output: str) -> None:
    for side in ("relay", "seed"):
        assert re.search(rf"^  {side} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$", output, re.M), output
    for label in (
        "relay (functions-framework)",
        "seed port (functions-framework)",
        "floor (4 round trips)",
        "session floor (requests)",
        "relay, a skipped event (one create-only write)",
        "framework (no-op function)",
    ):
        values = _row(output, label)
        assert len(values) == 5 and values[-1] == str(QUICK.events), (label, output)
