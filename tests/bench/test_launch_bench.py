"""`make bench` runs end to end: the table, the ratio line and the work counts (never the timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import fake_gcs_available

ROOT = Path(__file__).resolve().parents[2]
EVENTS, WARMUP = 3, 1


@pytest.fixture(scope="module")
def output() -> str:
    unavailable = fake_gcs_available()
    if unavailable:
        pytest.skip(unavailable)
    # A subprocess: google-auth and kfp read the metadata server's address when first imported.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.launch", "--events", str(EVENTS), "--warmup", str(WARMUP)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _row(output: str, label: str) -> list[str]:
    match = re.search(rf"^  {re.escape(label)} +(.*)$", output, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{output}"
    return match.group(1).split()


def _number(text: str) -> bool:
    return re.fullmatch(r"\d+\.\d\d", text) is not None


@pytest.mark.integration
def test_bench_prints_the_table_and_the_ratio(output: str) -> None:
    assert re.search(r"^  ms per event +median +p90$", output, re.MULTILINE), output
    for label in ("relay (warm)", "baseline (seed's per-event work)"):
        assert [_number(value) for value in _row(output, label)] == [True, True], label
    assert _number(_row(output, "relay cold first event (1 sample)")[0])
    assert re.search(
        r"^ratio: relay/baseline = \d+\.\d\d \(relay is \d+\.\d\u00d7 (faster|slower)\)$", output, re.MULTILINE
    ), output


@pytest.mark.integration
def test_relay_fetches_one_token_for_all_its_events(output: str) -> None:
    match = re.search(
        r"^metadata token fetches over all events: relay (\d+) in (\d+) events, "
        r"baseline (\d+) in (\d+) events$",
        output,
        re.MULTILINE,
    )
    assert match, output
    relay_fetches, relay_events, baseline_fetches, baseline_events = map(int, match.groups())
    assert (relay_fetches, relay_events) == (1, 1 + WARMUP + EVENTS)
    assert (baseline_fetches, baseline_events) == (WARMUP + EVENTS, WARMUP + EVENTS)


@pytest.mark.integration
def test_work_per_warm_event(output: str) -> None:
    assert _row(output, "metadata token fetches")[:2] == ["0.00", "1.00"]
    assert _row(output, "KFP API requests")[:2] == ["1.00", "3.00"]
    assert _row(output, "GCS requests")[:2] == ["3.00", "1.00"]
    assert _row(output, "records written")[:2] == ["1.00", "0.00"]
