"""Helpers for the local-stack tests: a LocalStack running the echo targets, and a reader for what they got."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack, emulator_available, fake_gcs_available
from devstack.demo import CATALOG, REPO
from devstack.processes import free_port

ECHO_SOURCE = Path(__file__).parent / "echo_functions" / "main.py"
TRIGGER_BUCKET = "relay-triggers"
TRIGGER_TOPIC = "relay-triggers"
NOTIFY_TOPIC = "relay-runs"

Event = dict[str, Any]
_UP_TIMEOUT = 120.0


def skip_without_emulators() -> None:
    reason = emulator_available() or fake_gcs_available()
    if reason:
        pytest.skip(reason)


def make_stack(workdir: Path, events_file: Path) -> LocalStack:
    return LocalStack(
        workdir,
        trigger_bucket=TRIGGER_BUCKET,
        trigger_topic=TRIGGER_TOPIC,
        notify_topic=NOTIFY_TOPIC,
        buckets=["relay-results"],
        function_env={"ECHO_EVENTS_FILE": str(events_file)},
        source=ECHO_SOURCE,
    )


class EventLog:
    """The JSON lines the echo targets append, read back with polling."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Event]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.read()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; events so far: {events}")
            time.sleep(0.02)

    def matching(self, **attributes: str) -> Callable[[list[Event]], list[Event]]:
        def select(events: list[Event]) -> list[Event]:
            return [e for e in events if all(e["attributes"].get(k) == v for k, v in attributes.items())]

        return select


class Up:
    """One `make up` in a process of its own on free ports, with its terminal in a file."""

    def __init__(self, workdir: Path, catalog: Path = CATALOG, policy: Path | None = None) -> None:
        self.workdir = workdir
        self.ports = [free_port(), free_port()]
        self.catalog = catalog
        self.policy = policy  # the template `make up POLICY=...` fills in; devstack/policy.yaml without
        self.terminal = workdir.parent / f"{workdir.name}-terminal.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, str]:
        """Start it and wait for env.sh; returns the environment a shell that sourced env.sh has."""
        (self.workdir / "env.sh").unlink(missing_ok=True)
        with self.terminal.open("ab") as terminal:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "devstack.up", "--workdir", str(self.workdir)),
                    *("--catalog", str(self.catalog)),
                    *(("--policy", str(self.policy)) if self.policy else ()),
                    *("--storage-port", str(self.ports[0]), "--pubsub-port", str(self.ports[1])),
                ],
                cwd=REPO,
                stdout=terminal,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
        deadline = time.monotonic() + _UP_TIMEOUT
        while not (self.workdir / "env.sh").exists():
            assert self.proc.poll() is None, self.terminal.read_text()
            assert time.monotonic() < deadline, self.terminal.read_text()
            time.sleep(0.1)
        time.sleep(0.2)  # env.sh is written in one go; the banner follows
        script = f"source {shlex.quote(str(self.workdir / 'env.sh'))} && env -0"
        shown = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, check=True, env=dict(os.environ))
        return dict(line.split("=", 1) for line in shown.stdout.decode().split("\0") if "=" in line)

    def down(self) -> str:
        """`make down` from another shell; returns what it printed, once `make up` has exited (cleanly)."""
        stopped = subprocess.run(
            [sys.executable, "-m", "devstack.down", "--workdir", str(self.workdir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert stopped.returncode == 0, stopped.stderr
        if self.proc is not None:
            assert self.proc.wait(timeout=10) == 0, self.terminal.read_text()
            self.proc = None
        return stopped.stdout

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=180)
