"""`relay trigger` on the in-memory store; tests/cli/test_emulators.py runs it against fake-gcs-server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from relay import naming
from relay.adapters.routing import RoutingBlobStore
from relay.events import EventInfo, ObjectDelivery
from relay.service import Relay, handle_delivery
from relay.status import run_key_for_object
from tests.cli.support import ECHO, Ran


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_uploads_and_prints_the_run_key_relay_gives_it(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, relay: Relay, tmp_path: Path
):
    ran = cli("trigger", write(tmp_path, "t.json", ECHO), "--bucket", "triggers", "--json")
    assert ran.code == 0 and ran.err == ""
    shown = ran.json()
    assert shown["uri"] == "gs://triggers/t.json"
    assert blobs.read("gs://triggers/t.json").data == (tmp_path / "t.json").read_bytes()
    assert shown["generation"] == blobs.stat("gs://triggers/t.json").generation
    assert shown["run_key"] == run_key_for_object(blobs, "gs://triggers/t.json")
    event = EventInfo("e1", "google.cloud.storage.object.v1.finalized", "s", relay.clock())
    delivery = ObjectDelivery(event, "triggers", "t.json", shown["generation"], None, "storage-event")
    assert handle_delivery(relay, delivery).run_key == shown["run_key"]


def test_text_output_and_a_name_in_a_folder(cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path):
    ran = cli("trigger", write(tmp_path, "t.json", ECHO), "--bucket", "gs://triggers", "--name", "assay/n.json")
    key = run_key_for_object(blobs, "gs://triggers/assay/n.json")
    generation = blobs.stat("gs://triggers/assay/n.json").generation
    assert ran.out == (
        f"uploaded    gs://triggers/assay/n.json\ngeneration  {generation}\nrun key     {key}\n\n"
        f"follow it: relay status {key}\n"
    )


def test_an_invalid_file_is_not_uploaded(cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path):
    path = write(tmp_path, "bad.json", {"pipeline": "echo", "parameters": {"count": "x"}})
    ran = cli("trigger", path, "--bucket", "triggers")
    assert ran.code == 1 and ran.out == ""
    assert ran.err.splitlines() == [
        f"relay trigger: {path}: not uploaded: invalid: 2 problems (invalid_parameters)",
        "  parameters.count: expected an integer, found string 'x'",
        "  parameters.message: expected a string, found nothing",
    ]
    assert list(blobs.list("gs://triggers/")) == []


def test_no_validate_uploads_it_anyway(cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path):
    ran = cli("trigger", write(tmp_path, "bad.json", {"pipeline": "nope"}), "--bucket", "triggers", "--no-validate")
    assert ran.code == 0
    assert f"run key     {run_key_for_object(blobs, 'gs://triggers/bad.json')}" in ran.out
    assert "nope-" in ran.out  # the pipeline names the run key even though the catalog lacks it


def test_the_object_name_decides_the_format(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("pipeline: echo\nparameters: {message: hi}\n")
    ran = cli("trigger", str(path), "--bucket", "triggers", "--name", "t.json")  # Relay would read it as JSON
    assert ran.code == 1 and "expected valid JSON" in ran.err
    refused = cli("trigger", str(path), "--bucket", "triggers", "--name", "t.txt")
    assert refused.code == 2
    assert refused.err.startswith("relay trigger: t.txt: expected a trigger name ending in .json, .yaml or .yml")


def test_bad_buckets_are_usage_errors(cli: Callable[..., Ran], tmp_path: Path):
    path = write(tmp_path, "t.json", ECHO)
    folder = cli("trigger", path, "--bucket", "gs://triggers/incoming")
    assert folder.code == 2
    assert folder.err == (
        "relay trigger: --bucket: expected a bucket name alone (folders go in --name), found 'gs://triggers/incoming'\n"
    )
    assert cli("trigger", path, "--bucket", "B").code == 2
    missing = cli("trigger", path)
    assert missing.code == 2 and "the following arguments are required: --bucket" in missing.err


def test_an_empty_file_gets_no_run_key_for_relay_skips_it(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, relay: Relay, tmp_path: Path
):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    # What the function does with it: skipped, with a skip record only (a key no run will ever have).
    generation = blobs.write("gs://triggers/empty.json", b"")
    event = EventInfo("e0", "google.cloud.storage.object.v1.finalized", "s", relay.clock())
    skipped = handle_delivery(relay, ObjectDelivery(event, "triggers", "empty.json", generation, 0, "storage-event"))
    assert skipped.outcome == "skipped" and skipped.run_key is not None
    assert list(blobs.list(relay.settings.results_uri)) == [
        naming.skip_record(relay.settings.results_uri, skipped.run_key)
    ]
    refusal = [
        f"relay trigger: {empty}: not uploaded: skipped: an empty file never becomes a run",
        f"  (document): expected a trigger document: Relay skips a {skipped.message}, no run, only a skip record, "
        "found an empty file",
    ]
    for argv in ((), ("--no-validate",)):
        ran = cli("trigger", str(empty), "--bucket", "triggers", "--name", "again.json", *argv)
        assert (ran.code, ran.out, ran.err.splitlines()) == (1, "", refusal)
    assert list(blobs.list("gs://triggers/again")) == []
    checked = cli("validate", str(empty), "--bucket", "triggers")
    assert checked.code == 1 and checked.out.splitlines()[:2] == [
        "skipped: an empty file never becomes a run",
        refusal[1],
    ]
    assert "run key  none: Relay skips a zero-byte object" in checked.out
