"""VertexBackend against a loopback pipelineJobs endpoint that checks bodies, ids, labels and tokens."""

from __future__ import annotations

import pytest

from relay.adapters.vertex_backend import VertexBackend
from relay.errors import BackendBusyError, BackendUnavailableError, LaunchRejectedError
from relay.ports import TokenSource
from tests.conftest import echo_request
from tests.servers.oauth import OAuthTokenServer
from tests.servers.vertex import VertexServer


def backend_for(server: VertexServer, tokens: TokenSource) -> VertexBackend:
    return VertexBackend(
        project="relay-test",
        location="us-central1",
        pipeline_root="gs://relay-pipeline-root",
        service_account="pipelines@relay-test.iam.gserviceaccount.com",
        endpoint=server.url,
        tokens=tokens,
    )


def test_the_job_id_is_the_run_key(vertex_server: VertexServer, tokens: TokenSource):
    run = backend_for(vertex_server, tokens).launch(echo_request("echo-abc", count=2))
    job = vertex_server.jobs["echo-abc"]
    assert run.run_id == "echo-abc"
    assert run.url == (
        "https://console.cloud.google.com/vertex-ai/locations/us-central1/pipelines/runs/echo-abc?project=relay-test"
    )
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://relay-pipeline-root"
    assert job["runtimeConfig"]["parameterValues"] == {"message": "hi", "count": 2}
    assert job["serviceAccount"] == "pipelines@relay-test.iam.gserviceaccount.com"
    assert job["labels"]["team"] == "assay"


def test_a_repeated_key_is_already_launched_not_an_error(vertex_server: VertexServer, tokens: TokenSource):
    backend = backend_for(vertex_server, tokens)
    first = backend.launch(echo_request("echo-abc"))
    assert backend.launch(echo_request("echo-abc")) == first
    assert len(vertex_server.jobs) == 1
    assert [r.method for r in vertex_server.requests] == ["POST", "POST", "GET"]  # 409, then confirmed


def test_find_run(vertex_server: VertexServer, tokens: TokenSource):
    backend = backend_for(vertex_server, tokens)
    assert backend.find_run("echo-abc") is None
    launched = backend.launch(echo_request("echo-abc"))
    assert backend.find_run("echo-abc") == launched


def test_a_401_refreshes_once(vertex_server: VertexServer, tokens: TokenSource, oauth: OAuthTokenServer):
    backend = backend_for(vertex_server, tokens)
    backend.launch(echo_request("echo-1"))
    oauth.revoke_all()
    backend.launch(echo_request("echo-2"))
    assert oauth.token_fetches == 2 and set(vertex_server.jobs) == {"echo-1", "echo-2"}


def test_invalid_requests_are_rejections_and_outages_are_transient(vertex_server: VertexServer, tokens: TokenSource):
    backend = backend_for(vertex_server, tokens)
    with pytest.raises(LaunchRejectedError, match="400"):
        backend.launch(echo_request("echo-1", colour="red"))
    vertex_server.fail_next(1, 503)
    with pytest.raises(BackendUnavailableError, match="503"):
        backend.launch(echo_request("echo-1"))
    vertex_server.fail_next(1, 403)
    with pytest.raises(BackendUnavailableError, match="403"):
        backend.launch(echo_request("echo-1"))
    assert vertex_server.jobs == {}


def test_only_already_exists_counts_as_launched(vertex_server: VertexServer, tokens: TokenSource):
    backend = backend_for(vertex_server, tokens)
    aborted = {"error": {"code": 409, "message": "concurrent update", "status": "ABORTED"}}
    vertex_server.fail_next(1, 409, body=aborted)
    with pytest.raises(BackendUnavailableError, match="ABORTED"):
        backend.launch(echo_request("echo-1"))
    exists = {"error": {"code": 409, "message": "Pipeline job already exists", "status": "ALREADY_EXISTS"}}
    vertex_server.fail_next(1, 409, body=exists)  # said to exist, yet no such job: not launched
    with pytest.raises(BackendUnavailableError, match="no job echo-1 is found"):
        backend.launch(echo_request("echo-1"))
    assert backend.launch(echo_request("echo-1")).run_id == "echo-1" and list(vertex_server.jobs) == ["echo-1"]


def test_a_quota_refusal_is_busy_with_the_delay_it_names(vertex_server: VertexServer, tokens: TokenSource):
    backend = backend_for(vertex_server, tokens)
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
    exhausted = {
        "error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED", "details": [retry_info]}
    }
    vertex_server.fail_next(1, 429, body=exhausted)
    with pytest.raises(BackendBusyError, match="RESOURCE_EXHAUSTED") as busy:
        backend.launch(echo_request("echo-1"))
    assert busy.value.retry_after == 30.0 and vertex_server.jobs == {}
