"""The audit trail's buffer at an instance's shutdown: a function served by functions-framework (gunicorn, as Cloud
Run serves it) on loopback is stopped with SIGTERM, as Cloud Run stops an instance, with an entry still buffered;
the worker's exit writes it, and `relay audit verify` proves the trail whole."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack.bridge import post
from devstack.functions import FunctionsServer
from devstack.stack import DEFAULT_SOURCE, MESSAGE_PUBLISHED_TARGET
from relay import audit, audit_trail
from relay.adapters.localfs import LocalBlobStore
from relaycli.main import main
from tests.conftest import CATALOG

pytestmark = pytest.mark.integration
TOPIC = "projects/relay-local/topics/relay-triggers"


def test_entries_still_buffered_at_sigterm_are_written_at_the_exit_and_verify_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    results = str(tmp_path / "results")
    env = {
        "RELAY_BACKEND": "local",
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_LOCAL_ROOT": str(tmp_path / "local"),
        "RELAY_AUDIT_AGE": "1h",  # the flusher leaves the entries buffered: only the exit writes them
    }
    # A trigger the catalog refuses: its rejection record is a ledger write, with its entry, and nothing runs.
    trigger = {"pipeline": "echo", "parameters": {"message": 7}}
    push = {
        "subscription": "exit-flush",
        "message": {
            "data": base64.b64encode(json.dumps(trigger).encode()).decode(),
            "attributes": {},
            "messageId": "4921061845123456",
            "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        },
    }
    trail = Path(audit.location(results))
    # A generous stop timeout: past it the group is killed (SIGKILL), and no exit handler runs.
    server = FunctionsServer(
        MESSAGE_PUBLISHED_TARGET, DEFAULT_SOURCE, env, workdir=tmp_path, start_timeout=120, stop_timeout=60
    )
    with server:
        status = post(
            f"{server.url}/{TOPIC}", json.dumps(push).encode(), {"Content-Type": "application/json"}, timeout=120
        )
        assert status == 200, server.process.log_path.read_text()
        assert [p.name for p in (Path(results) / "rejected").iterdir()]  # the record is written on the event's path
        assert not trail.exists() or not list(trail.rglob("*.json"))  # its entry waits in the worker's buffer
    # Leaving `with` sends SIGTERM and waits for the processes to exit: the worker's exit wrote the buffer.
    entries = audit_trail.entries(LocalBlobStore(tmp_path), str(trail))
    written = [audit.parse_entry(stored.data) for stored in entries]
    assert [(entry.op, entry.object.split("/")[0], entry.state) for entry in written] == [
        ("write", "rejected", "rejected")
    ]
    assert audit_trail.prove(LocalBlobStore(tmp_path), results, str(trail)).whole
    code = main(["audit", "verify"], env={"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(CATALOG)})
    assert code == 0, capsys.readouterr().out
