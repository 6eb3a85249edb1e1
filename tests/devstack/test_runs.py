"""The stack waits for the local backend's detached runners, then stops those still going."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devstack.processes import group_members
from devstack.runs import runner_groups, stop_local_runs


def start_runner(root: Path, key: str, seconds: float) -> subprocess.Popen[bytes]:
    runner = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], start_new_session=True)
    (root / key).mkdir(parents=True)
    (root / key / "run.json").write_text(json.dumps({"pid": runner.pid}))
    return runner


def test_finished_runners_are_waited_for_and_stuck_ones_stopped(tmp_path: Path):
    quick, stuck = start_runner(tmp_path, "quick", 0.3), start_runner(tmp_path, "stuck", 600)
    assert sorted(runner_groups(tmp_path)) == sorted([quick.pid, stuck.pid])
    stopped = stop_local_runs(tmp_path, grace=1.0)
    assert stopped == [stuck.pid]
    assert group_members(quick.pid) == [] and group_members(stuck.pid) == []
    assert quick.wait(timeout=5) == 0 and stuck.wait(timeout=5) != 0  # the stuck one was stopped by a signal
