"""The push bench runs end to end on a small object: both sides, the ratio line, the same bytes at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_push_bench_reports_both_sides_and_their_ratios():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.push", "--mib", "8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "relay push step (streamed)" in done.stdout and "baseline (download, then upload)" in done.stdout
    assert "ratio: relay/baseline time = " in done.stdout and "peak memory = " in done.stdout
    assert "status 200" in done.stdout
