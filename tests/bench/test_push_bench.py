"""The push bench runs end to end in its quick mode: every side at every size, each copy checked, in the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_push_bench_reports_every_side_at_every_size():
    from bench.push import LABELS

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.push", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if any(label in line for label in LABELS.values())]
    assert len(rows) == 2 * len(LABELS)
    for label in LABELS.values():
        assert [row for row in rows if label in row and " 12 MiB " in row] != []
        assert [row for row in rows if label in row and " 24 MiB " in row] != []
    assert all(row.rstrip().endswith("x") for row in rows)  # the speed ratio against raw, whole
    assert "every copy checked against the source's CRC32C" in done.stdout
