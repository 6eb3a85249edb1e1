"""The same chain into the other backends: Vertex AI's REST endpoint, and the embedded kfp.local runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from relay import naming
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import wait_for_record
from tests.servers.metadata import MetadataServer
from tests.servers.vertex import VertexServer

pytestmark = pytest.mark.integration


def upload(storage: Any, name: str, document: object) -> str:
    blob = storage.bucket(TRIGGERS).blob(name)
    blob.upload_from_string(json.dumps(document).encode(), content_type="application/json")
    return naming.derive_run_key("echo", naming.object_identity(TRIGGERS, name, int(blob.generation)))


@pytest.fixture(scope="module")
def vertex(metadata: MetadataServer) -> Iterator[VertexServer]:
    with VertexServer(project="relay-test", location="europe-west1", token_check=metadata.is_valid) as server:
        yield server
    assert server.errors == []


def test_vertex_pipeline_jobs_are_created_once_under_the_run_key(
    tmp_path_factory: pytest.TempPathFactory, vertex: VertexServer, metadata: MetadataServer
):
    env = {
        "RELAY_BACKEND": "vertex",
        "RELAY_VERTEX_PROJECT": "relay-test",
        "RELAY_VERTEX_LOCATION": "europe-west1",
        "RELAY_VERTEX_PIPELINE_ROOT": "gs://relay-pipeline-root",
        "RELAY_VERTEX_SERVICE_ACCOUNT": "pipelines@relay-test.iam.gserviceaccount.com",
        "RELAY_VERTEX_ENDPOINT": vertex.url,
        **metadata.env(),
    }
    with relay_stack(tmp_path_factory.mktemp("vertex-chain"), env) as stack:
        storage = stack.storage_client()
        document = {"pipeline": "echo", "parameters": {"message": "to vertex"}, "labels": {"team": "assay"}}
        key = upload(storage, "vertex/echo.json", document)
        record = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
        job = vertex.jobs[key]
        assert record["run_id"] == key and record["backend"] == "vertex"
        assert record["run_url"].endswith(f"/locations/europe-west1/pipelines/runs/{key}?project=relay-test")
        assert job["labels"]["team"] == "assay" and job["runtimeConfig"]["parameterValues"]["run_key"] == key
        assert job["serviceAccount"] == "pipelines@relay-test.iam.gserviceaccount.com"
        assert len(vertex.jobs) == 1


def test_the_local_backend_runs_the_pipeline_and_records_how_it_ended(tmp_path_factory: pytest.TempPathFactory):
    with relay_stack(tmp_path_factory.mktemp("local-chain"), {"RELAY_BACKEND": "local"}) as stack:
        storage = stack.storage_client()
        good = upload(storage, "local/good.json", {"pipeline": "echo", "parameters": {"message": "locally"}})
        bad = upload(storage, "local/bad.json", {"pipeline": "echo", "parameters": {"message": "x", "fail": True}})
        launched = wait_for_record(storage, f"runs/{good}/launch.json", "launched")
        succeeded = wait_for_record(storage, f"runs/{good}/result.json", "succeeded", timeout=60)
        assert succeeded["run_id"] == launched["run_id"] and succeeded["backend"] == "local"
        assert succeeded["outputs"]["Output"].startswith(f"{good}: locally")
        failed = wait_for_record(storage, f"runs/{bad}/result.json", "failed", timeout=60)
        assert failed["status"] == 500 and "Inner task failed: 'describe'" in failed["message"]
