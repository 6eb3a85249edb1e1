"""The push pipeline end to end: a trigger file in the bucket, the local backend, objects in another bucket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import LocalStack
from pipelines.compile import COMPILED
from relay import naming
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import read_record, wait_for_record
from tests.servers.lims import LimsServer

pytestmark = pytest.mark.integration
LAB, ML = "lab-data", "ml-data"
CANARY = "Bearer canary-5f1d2c9e8b7a4e31"  # a secret value that must show up nowhere but on the wire


@pytest.fixture(scope="module")
def lims() -> Iterator[LimsServer]:
    with LimsServer(authorization=CANARY) as server:
        yield server


@pytest.fixture(scope="module")
def careless() -> Iterator[LimsServer]:
    """A server that refuses the token and echoes it back, as careless servers do."""
    with LimsServer(authorization="Bearer another") as server:
        yield server


def policy(lims: LimsServer, careless: LimsServer) -> str:
    """The tenant these pushes belong to: its triggers, the lab's data, and each destination the tests push to.

    The secret is bound to both servers' Authorization header, and to nothing else.
    """
    servers = {"lims": lims.url, "careless": careless.url}
    return yaml.safe_dump(
        {
            "version": 1,
            "tenants": [
                {
                    "name": "lab",
                    "triggers": [f"gs://{TRIGGERS}/push/"],
                    "sources": [f"gs://{LAB}/"],
                    "destinations": [
                        {"id": "ml-data", "kind": "gcs", "bucket": ML},
                        *({"id": name, "kind": "http", "url": f"{url}/samples/"} for name, url in servers.items()),
                    ],
                    "secrets": [
                        {"secret": "secret://lims-token", "to": name, "field": "headers.Authorization"}
                        for name in servers
                    ],
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, lims: LimsServer, careless: LimsServer) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("push-chain")
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(policy(lims, careless))
    env = {
        "RELAY_BACKEND": "local",
        "RELAY_CATALOG_URI": str(COMPILED),
        "RELAY_POLICY_URI": str(policy_file),
        "RELAY_SECRET_LIMS_TOKEN": CANARY,
    }
    with relay_stack(workdir, env, buckets=[LAB, ML]) as running:
        yield running


def trigger(storage: Any, name: str, document: dict[str, Any]) -> str:
    blob = storage.bucket(TRIGGERS).blob(name)
    blob.upload_from_string(json.dumps(document), content_type="application/json")
    return naming.derive_run_key("push", naming.object_identity(TRIGGERS, name, int(blob.generation)))


def test_a_trigger_file_pushes_a_bucket_prefix_to_another_bucket(stack: LocalStack, tmp_path: Path):
    storage = stack.storage_client()
    lab = storage.bucket(LAB)
    for n in range(3):
        blob = lab.blob(f"assay/2026-11-21/plate-{n}.json")
        blob.metadata = {"instrument": "reader-7"}
        blob.upload_from_string(
            json.dumps({"extra_data": {"plate": n}, "raw": [n] * 10}), content_type="application/json"
        )
    document = {
        "pipeline": "push",
        "parameters": {
            "sources": [f"gs://{LAB}/assay/2026-11-21/"],
            "destination": {"kind": "gcs", "bucket": ML, "prefix": "incoming"},
            "select": "/extra_data",
        },
    }
    key = trigger(storage, "push/nightly.json", document)
    wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    result = wait_for_record(storage, f"runs/{key}/result.json", "succeeded", timeout=90)
    assert result["metrics"]["files"] == 3 and result["status"] == 200
    pushed = {blob.name: json.loads(blob.download_as_bytes()) for blob in storage.list_blobs(ML, prefix="incoming/")}
    assert pushed == {f"incoming/plate-{n}.json": {"plate": n} for n in range(3)}
    receipts = result["outputs"]["receipts"]
    assert sorted(r["destination"] for r in receipts) == [f"gs://{ML}/incoming/plate-{n}.json" for n in range(3)]

    # The same push again (a new trigger file): everything is there already, nothing is sent twice.
    again = trigger(storage, "push/nightly-rerun.json", document)
    rerun = wait_for_record(storage, f"runs/{again}/result.json", "succeeded", timeout=90)
    assert rerun["metrics"]["skipped"] == 3 and rerun["metrics"]["bytes"] == 0


def test_a_failed_push_still_gets_its_record(stack: LocalStack):
    storage = stack.storage_client()
    document = {
        "pipeline": "push",
        "parameters": {"sources": [f"gs://{LAB}/nothing-here/"], "destination": {"kind": "gcs", "bucket": ML}},
    }
    key = trigger(storage, "push/empty.json", document)
    result = wait_for_record(storage, f"runs/{key}/result.json", "failed", timeout=90)
    assert result["status"] == 404 and "nothing to push" in result["message"]


def test_a_secret_reaches_the_wire_and_nothing_else(stack: LocalStack, lims: LimsServer, careless: LimsServer):
    storage = stack.storage_client()
    storage.bucket(LAB).blob("eln/sample-1.json").upload_from_string(json.dumps({"sample": 1}))
    destination = {
        "kind": "http",
        "url": f"{lims.url}/samples/{{name}}",
        "headers": {"Authorization": "secret://lims-token"},
    }
    sent = trigger(
        storage,
        "push/eln.json",
        {"pipeline": "push", "parameters": {"sources": [f"gs://{LAB}/eln/"], "destination": destination}},
    )
    assert wait_for_record(storage, f"runs/{sent}/result.json", "succeeded", timeout=90)["status"] == 200
    assert [u.request.header("Authorization") for u in lims.uploads] == [CANARY]
    # A server that refuses the token and echoes it back: the failure must not repeat it.
    refused = trigger(
        storage,
        "push/eln-refused.json",
        {
            "pipeline": "push",
            "parameters": {
                "sources": [f"gs://{LAB}/eln/"],
                "destination": {**destination, "url": f"{careless.url}/samples/{{name}}"},
            },
        },
    )
    failed = wait_for_record(storage, f"runs/{refused}/result.json", "failed", timeout=90)
    assert failed["status"] in (401, 502) and "401" in failed["message"]
    launch = read_record(storage, f"runs/{sent}/launch.json")
    assert (
        launch is not None and launch["parameters"]["destination"]["headers"]["Authorization"] == "secret://lims-token"
    )
    secret = CANARY.split()[1]
    leaks = [
        blob.name
        for bucket in storage.list_buckets()
        for blob in storage.list_blobs(bucket.name)
        if secret.encode() in blob.download_as_bytes()
    ]
    leaks += [str(path) for path in stack.workdir.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert leaks == []


def test_a_push_beyond_the_policy_is_rejected_before_it_runs(stack: LocalStack, lims: LimsServer):
    storage = stack.storage_client()
    before = len(lims.uploads)
    # The LIMS's host, another path; and the secret, to a header the policy binds it to only on the LIMS paths.
    destination = {
        "kind": "http",
        "url": f"{lims.url}/admin/{{name}}",
        "headers": {"Authorization": "secret://lims-token"},
    }
    key = trigger(
        storage,
        "push/elsewhere.json",
        {
            "pipeline": "push",
            "parameters": {"sources": [f"gs://{LAB}/eln/", "gs://ml-data/"], "destination": destination},
        },
    )
    rejected = wait_for_record(storage, f"rejected/{key}.json", "rejected")
    assert rejected["error"]["code"] == "policy_denied"
    assert [p["field"] for p in rejected["error"]["problems"]] == [
        "parameters.sources[1]",
        "parameters.destination",
        "parameters.destination.headers.Authorization",
    ]
    assert read_record(storage, f"runs/{key}/launch.json") is None  # nothing was claimed, nothing ran
    assert len(lims.uploads) == before
    # Outside the tenant's trigger prefix, even an allowed push is refused: the origin decides the tenant.
    allowed = {"sources": [f"gs://{LAB}/eln/"], "destination": {"kind": "gcs", "bucket": ML, "prefix": "eln"}}
    trigger(storage, "elsewhere/push.json", {"pipeline": "push", "parameters": allowed})
    generation = storage.bucket(TRIGGERS).get_blob("elsewhere/push.json").generation
    # Refused unread, under a key of the event alone: no run key the file names is ever used.
    stray = naming.derive_run_key(
        naming.UNKNOWN_PIPELINE, naming.object_identity(TRIGGERS, "elsewhere/push.json", generation)
    )
    origin = wait_for_record(storage, f"rejected/{stray}.json", "rejected")["error"]
    assert origin["code"] == "policy_denied" and [p["field"] for p in origin["problems"]] == ["(origin)"]
