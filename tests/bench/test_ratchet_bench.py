"""The ratchet bench runs end to end in its quick mode: the table, the overhead lines and the target (never timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[+-]?[\d,]+\.\d{2,3}"
pytestmark = pytest.mark.integration  # it starts an echo server and sandboxed workers


def test_the_ratchet_bench_prints_each_side_and_the_harness_overheads():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.ratchet", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("ratchet per-call overhead: 200 interleaved rounds after 20 warm-up calls per side"), out
    assert re.search(r"^  ms per call +median +p99$", out, re.MULTILINE), out
    for side in (
        "local cluster (warm worker)",
        "raw in-process apply()",
        "http cluster",
        "raw requests",
        "local cluster (fresh worker per call)",
    ):
        assert re.search(rf"^  {re.escape(side)} +{NUMBER} +{NUMBER}$", out, re.MULTILINE), f"{side!r} in:\n{out}"
    for label in ("local", "http"):
        line = rf"^  {label} harness overhead: {NUMBER} ms per call \(median\), {NUMBER} ms \(p99\); {NUMBER}x the raw"
        assert re.search(line, out, re.MULTILINE), out
    assert re.search(rf"a warm worker saves {NUMBER} ms per call", out), out
    target = rf"target: local harness overhead <= 2 ms per call after warm-up: (met|not met) \({NUMBER} ms\)"
    assert re.search(target, out), out
