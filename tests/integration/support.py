"""Polling helpers for the integration tests: records in the fake bucket, log lines, notifications."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from devstack.logs import outcome_lines
from relay import audit

T = TypeVar("T")
RESULTS = "relay-results"


def eventually(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll until `probe` returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def read_record(client: Any, path: str) -> dict[str, Any] | None:
    blob = client.bucket(RESULTS).get_blob(path)
    return json.loads(blob.download_as_bytes()) if blob is not None else None


def wait_for_record(client: Any, path: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        record = read_record(client, path)
        return record if record is not None and record.get("state") == state else None

    return eventually(probe, timeout, f"{path} in state {state}")


def record_paths(client: Any, prefix: str = "") -> list[str]:
    """The records under `prefix`; the audit trail beside them (relay.audit) is not one."""
    names = (blob.name for blob in client.list_blobs(RESULTS, prefix=prefix))
    return sorted(name for name in names if not name.startswith(f"{audit.AUDIT_FOLDER}/"))


def wait_for_outcome(log_path: Path, trigger_uri: str, outcome: str, timeout: float = 20.0) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = [e for e in outcome_lines(log_path) if e["trigger_uri"] == trigger_uri and e["outcome"] == outcome]
        return found[-1] if found else None

    return eventually(probe, timeout, f"a {outcome} line for {trigger_uri} in {log_path}")
