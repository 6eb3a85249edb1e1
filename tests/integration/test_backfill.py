"""`relay backfill` on the real chain: objects uploaded to buckets whose notifications are off (no event reaches
Relay) are listed on fake-gcs-server with the caller's client, delivered through the Pub/Sub emulator to the real
on_message_published, and launched under the run keys their storage events would have had; a second backfill, and
a dry run, deliver nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack
from relay import naming
from relaycli.main import main
from tests.cli.support import ECHO
from tests.integration.conftest import PROJECT, TOPIC, relay_stack
from tests.integration.support import eventually, read_record, record_paths

pytestmark = pytest.mark.integration
LAB_TRIGGERS, LAB_DATA = "lab-triggers", "lab-data"  # neither is the stack's notified trigger bucket
TENANT_TOPIC = f"projects/{PROJECT}/topics/{TOPIC}"  # the topic the stack pushes to on_message_published
POLICY = f"""
notifications:
  - {{topic: {TENANT_TOPIC}, buckets: [{LAB_DATA}]}}
tenants:
  - name: lab
    triggers: [gs://{LAB_TRIGGERS}/lab/]
    topics: [{TENANT_TOPIC}]
    routes:
      - {{id: csv, bucket: {LAB_DATA}, prefix: assay/, glob: "*.csv", pipeline: echo,
         parameters: {{message: "{{name}}", count: "{{size}}"}}}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("backfill")
    (workdir / "policy.yaml").write_text(POLICY)
    env = {"RELAY_BACKEND": "local", "RELAY_POLICY_URI": str(workdir / "policy.yaml")}
    with relay_stack(workdir, env, buckets=[LAB_TRIGGERS, LAB_DATA]) as running:
        yield running


def backfill(stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: Any, *argv: str) -> dict[str, Any]:
    """`relay backfill ... --json` as a user with the stack's exports runs it."""
    env = stack.env()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])  # read by the storage adapter
    code = main(["backfill", *argv, "--json"], env=env)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    shown: dict[str, Any] = json.loads(captured.out)
    return shown


def test_objects_without_events_launch_once_under_their_events_keys(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
):
    storage = stack.storage_client()
    trigger = storage.bucket(LAB_TRIGGERS).blob("lab/a.json")
    trigger.upload_from_string(json.dumps(ECHO), content_type="application/json")
    data = storage.bucket(LAB_DATA).blob("assay/x.csv")
    data.upload_from_string(b"a,b\n1,2\n", content_type="text/csv")
    expected = {
        trigger_uri: naming.derive_run_key("echo", naming.object_identity(bucket, name, generation))
        for trigger_uri, bucket, name, generation in (
            (f"gs://{LAB_TRIGGERS}/lab/a.json", LAB_TRIGGERS, "lab/a.json", trigger.generation),
            (f"gs://{LAB_DATA}/assay/x.csv", LAB_DATA, "assay/x.csv", data.generation),
        )
    }
    prefixes = (f"gs://{LAB_TRIGGERS}/lab/", f"gs://{LAB_DATA}/")

    dry = [backfill(stack, monkeypatch, capsys, prefix, "--dry-run", "--since", "1h") for prefix in prefixes]
    assert {row["uri"]: row["run_key"] for shown in dry for row in shown["delivered"]} == expected
    future = backfill(stack, monkeypatch, capsys, prefixes[0], "--dry-run", "--since", "2100-01-01T00:00:00Z")
    assert future["delivered"] == []  # the store's update times: nothing changed since then
    assert record_paths(storage) == []  # a dry run delivers nothing

    delivered = [backfill(stack, monkeypatch, capsys, prefix) for prefix in prefixes]
    assert {row["uri"]: row["run_key"] for shown in delivered for row in shown["delivered"]} == expected
    for key in expected.values():
        record = eventually(lambda key=key: read_record(storage, f"runs/{key}/launch.json"), 30, f"{key} launched")
        assert record["pipeline"] == "echo" and record["trigger"]["topic"] == TENANT_TOPIC, record
    assert record_paths(storage, "rejected/") == []

    again = [backfill(stack, monkeypatch, capsys, prefix) for prefix in prefixes]
    assert [shown["delivered"] for shown in again] == [[], []]
    assert sorted(row["run_key"] for shown in again for row in shown["recorded"]) == sorted(expected.values())
