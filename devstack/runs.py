"""The local backend's runners: detached from the functions by design, so the stack waits for them, then stops them."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from devstack.processes import group_members, signal_group

_POLL = 0.1


def runner_groups(local_root: Path) -> list[int]:
    """Process groups of the runners started under `local_root` that are still alive (each leads its own)."""
    groups = []
    for run_file in local_root.glob("*/run.json"):
        try:
            pid = int(json.loads(run_file.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if group_members(pid):
            groups.append(pid)
    return groups


def stop_local_runs(local_root: Path, grace: float = 60.0) -> list[int]:
    """Let running pipelines finish (they still record their results), then stop what is left; returns those."""
    deadline = time.monotonic() + grace
    while (alive := runner_groups(local_root)) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for group in alive:
        signal_group(group, signal.SIGTERM)
    settle = time.monotonic() + 5.0
    while any(group_members(group) for group in alive) and time.monotonic() < settle:
        time.sleep(_POLL)
    for group in alive:
        if group_members(group):
            signal_group(group, signal.SIGKILL)
    return alive
