"""Helpers for the local-stack tests: a LocalStack running the echo targets, and a reader for what they got."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack, emulator_available, fake_gcs_available

ECHO_SOURCE = Path(__file__).parent / "echo_functions" / "main.py"
TRIGGER_BUCKET = "relay-triggers"
TRIGGER_TOPIC = "relay-triggers"
NOTIFY_TOPIC = "relay-runs"

Event = dict[str, Any]


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
