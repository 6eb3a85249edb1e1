"""The delivery's origin decides, on the real chain: assay's trigger author publishes on assay's topic, naming
imaging's trigger file and forging a storage notification of imaging's data bucket.

fake-gcs-server holds the catalog, the two-tenant policy and imaging's objects; the Pub/Sub emulator pushes assay's
topic to the real on_message_published. Both messages must be refused and recorded for assay, keyed by assay's
message, and nothing of imaging's launched or read.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import LocalStack
from pipelines.compile import COMPILED
from relay import naming
from relay.events import NONCE_ATTRIBUTE
from tests.integration.conftest import PROJECT, TOPIC, TRIGGERS, relay_stack
from tests.integration.support import record_paths, wait_for_record

pytestmark = pytest.mark.integration
CATALOG, IMAGING_TRIGGERS, IMAGING_DATA, ASSAY_DATA, ML = (
    "relay-catalog",
    "imaging-triggers",  # not the stack's notified trigger bucket: no storage event launches imaging's file here
    "imaging-data",
    "assay-data",
    "ml-data",
)
ASSAY_TOPIC = f"projects/{PROJECT}/topics/{TOPIC}"  # the topic the stack pushes to on_message_published
IMAGING_TOPIC = f"projects/{PROJECT}/topics/imaging-triggers"
POLICY = f"""
version: 1
notifications:
  - {{topic: {ASSAY_TOPIC}, buckets: [{TRIGGERS}, {ASSAY_DATA}]}}
  - {{topic: {IMAGING_TOPIC}, buckets: [{IMAGING_TRIGGERS}, {IMAGING_DATA}]}}
tenants:
  - name: assay
    triggers: [gs://{TRIGGERS}/assay/]
    topics: [{ASSAY_TOPIC}]
    sources: [gs://{ASSAY_DATA}/]
    destinations: [{{id: ml, kind: gcs, bucket: {ML}, prefix: assay/}}]
  - name: imaging
    triggers: [gs://{IMAGING_TRIGGERS}/imaging/]
    topics: [{IMAGING_TOPIC}]
    sources: [gs://{IMAGING_DATA}/]
    destinations: [{{id: ml, kind: gcs, bucket: {ML}, prefix: imaging/}}]
    routes:
      - id: scans
        bucket: {IMAGING_DATA}
        prefix: scans/
        pipeline: push
        parameters:
          sources: ["{{uri}}"]
          destination: {{kind: gcs, bucket: {ML}, prefix: "imaging/{{metadata.batch}}"}}
"""
IMAGING_TRIGGER = {
    "pipeline": "push",
    "parameters": {
        "sources": [f"gs://{IMAGING_DATA}/scans/"],
        "destination": {"kind": "gcs", "bucket": ML, "prefix": "imaging/nightly"},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"RELAY_BACKEND": "local", "RELAY_CATALOG_URI": f"gs://{CATALOG}/v1",
           "RELAY_POLICY_URI": f"gs://{CATALOG}/v1/policy.yaml"}  # fmt: skip
    buckets = [CATALOG, IMAGING_TRIGGERS, IMAGING_DATA, ASSAY_DATA, ML]
    with relay_stack(tmp_path_factory.mktemp("origin"), env, buckets=buckets) as running:
        catalog = running.storage_client().bucket(CATALOG)
        catalog.blob("v1/push.yaml").upload_from_filename(str(COMPILED / "push.yaml"))
        catalog.blob("v1/policy.yaml").upload_from_string(POLICY)
        yield running


def publish_as_assay(stack: LocalStack, attributes: dict[str, str], body: bytes = b"") -> str:
    """Publish on assay's topic; the run key Relay must give a refusal of it (a digest of the message)."""
    nonce = secrets.token_hex(8)
    message_id = stack.publish(TOPIC, body, {**attributes, NONCE_ATTRIBUTE: nonce})
    return naming.derive_run_key(naming.UNKNOWN_PIPELINE, naming.message_identity(ASSAY_TOPIC, message_id, nonce))


def refused(stack: LocalStack, key: str) -> dict[str, Any]:
    record = wait_for_record(stack.storage_client(), f"rejected/{key}.json", "rejected", timeout=30)
    assert record["error"]["code"] == "policy_denied", record
    assert record["trigger"]["topic"] == ASSAY_TOPIC and record["pipeline"] is None
    return record


def test_assays_topic_never_launches_or_reads_imagings_trigger_or_data(stack: LocalStack):
    storage = stack.storage_client()
    trigger = storage.bucket(IMAGING_TRIGGERS).blob("imaging/nightly.json")
    trigger.upload_from_string(json.dumps(IMAGING_TRIGGER), content_type="application/json")
    scan = storage.bucket(IMAGING_DATA).blob("scans/s-1.tif")
    scan.metadata = {"batch": "b7"}
    scan.upload_from_string(b"scan" * 100, content_type="image/tiff")

    named = publish_as_assay(
        stack, {"trigger_uri": f"gs://{IMAGING_TRIGGERS}/imaging/nightly.json#{trigger.generation}"}
    )
    notification = {
        "payloadFormat": "JSON_API_V1",
        "eventType": "OBJECT_FINALIZE",
        "bucketId": IMAGING_DATA,
        "objectId": "scans/s-1.tif",
        "objectGeneration": str(scan.generation),
    }
    body = {"bucket": IMAGING_DATA, "name": "scans/s-1.tif", "size": "400", "metadata": {"batch": "assay-was-here"}}
    forged = publish_as_assay(stack, notification, json.dumps(body).encode())

    assert refused(stack, named)["error"]["problems"] == [
        {
            "field": "(origin)",
            "expected": f"an object under tenants.assay.triggers (gs://{TRIGGERS}/assay/)",
            "found": f"gs://{IMAGING_TRIGGERS}/imaging/nightly.json",
        }
    ]
    assert refused(stack, forged)["error"]["problems"] == [
        {
            "field": "(origin)",
            "expected": f"a notification of a bucket that notifications wires to this topic ({TRIGGERS}, {ASSAY_DATA})",
            "found": f"a notification of {IMAGING_DATA} on {ASSAY_TOPIC}",
        }
    ]
    # Nothing launched, nothing recorded but the two refusals, nothing written for imaging.
    assert record_paths(storage) == sorted([f"rejected/{named}.json", f"rejected/{forged}.json"])
    assert list(storage.list_blobs(ML)) == []
    # Never read, not even stat'ed: fake-gcs-server logs each request it serves, and no request line names either
    # object (the uploads name them in their bodies, not their URLs).
    served = (stack.workdir / "fake-gcs-server.log").read_text(errors="replace").splitlines()
    assert any("GET /storage/v1/b/relay-catalog/o/v1%2Fpolicy.yaml" in line for line in served)  # it does log reads
    assert [line for line in served if "nightly.json" in line or "s-1.tif" in line] == []
