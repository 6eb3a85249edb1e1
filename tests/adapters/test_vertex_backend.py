"""VertexBackend against a loopback pipelineJobs endpoint that checks bodies, ids, labels and tokens."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay import lifecycle
from relay import policy as rules
from relay.adapters.vertex_backend import VertexBackend
from relay.errors import BackendBusyError, BackendUnavailableError, InvalidTriggerError, LaunchRejectedError
from relay.events import EventInfo, ObjectDelivery
from relay.ports import TokenSource
from relay.service import Relay, handle_delivery
from relay.triggers import parse_trigger
from tests.conftest import echo_request
from tests.fakes import MemoryBlobStore
from tests.policies import policy
from tests.servers.oauth import OAuthTokenServer
from tests.servers.vertex import VertexServer

# Google's published description of pipelineJobs.create (the parts Relay sends), as google-api-python-client ships it.
DISCOVERY = json.loads((Path(__file__).parents[1] / "data" / "vertex" / "aiplatform.v1.pipelineJobs.json").read_text())


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


def check_against_discovery(job_id: str | None, body: Any) -> None:
    """What the discovery document says of a pipelineJobs.create request, its numbers read from its own words."""
    id_rule = DISCOVERY["create"]["parameters"]["pipelineJobId"]["description"]
    [below] = re.findall(r"should be less than (\d+) characters", id_rule)
    assert job_id is not None and len(job_id) < int(below) and re.fullmatch(r"[a-z][-a-z0-9]*", job_id), job_id
    schemas = DISCOVERY["schemas"]
    job = schemas["GoogleCloudAiplatformV1PipelineJob"]["properties"]
    assert set(body) <= {name for name, field in job.items() if not field.get("readOnly")}
    assert set(body["runtimeConfig"]) <= set(schemas["GoogleCloudAiplatformV1PipelineJobRuntimeConfig"]["properties"])
    [longest_name] = re.findall(r"up to (\d+) characters long", job["displayName"]["description"])
    assert len(body["displayName"]) <= int(longest_name)
    labels, label_rule = body["labels"], job["labels"]["description"]
    [reserved] = re.findall(r"- `([a-z-]+)`, user set value will get overrided", label_rule)
    assert "lowercase letters, numeric characters, underscores and dashes" in label_rule
    # At most 64 on a resource, keys 1-63 starting with a letter, values 0-63: the cloud labels the document links.
    assert isinstance(labels, dict) and len(labels) <= 64 and reserved not in labels
    for key, value in labels.items():
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) and re.fullmatch(r"[a-z0-9_-]{0,63}", value), (key, value)


TENANT = "t" + "0" * 19  # the longest tenant name a policy takes
GOVERNED = policy(f"tenants:\n  - name: {TENANT}\n    triggers: [gs://triggers/{TENANT}/]\n")
CLOUD = rules.Context(local=False, protected=("gs://catalog",))


def most_labels_a_trigger_may_carry() -> int:
    def taken(count: int) -> bool:
        document = {"pipeline": "echo", "labels": {f"l{n}": "v" for n in range(count)}}
        try:
            parse_trigger(json.dumps(document).encode(), "json", "gs://triggers/t.json")
        except InvalidTriggerError:
            return False
        return True

    return max(count for count in range(100) if taken(count))


def test_the_longest_keys_and_most_labels_a_tenant_may_send_are_jobs_vertex_takes(
    relay: Relay, store: MemoryBlobStore, vertex_server: VertexServer, tokens: TokenSource
):
    now = datetime.now(UTC)  # the submit deadline is checked against the real clock
    governed = replace(relay, policy=GOVERNED, backend=backend_for(vertex_server, tokens), clock=lambda: now)
    tenant = GOVERNED.tenants[0]
    longest = max(n for n in range(1, 200) if not rules.check_trigger(GOVERNED, tenant, "echo", {}, "k" * n, CLOUD))
    own = {f"l{n}": "v" for n in range(most_labels_a_trigger_may_carry())}
    document = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "k" * longest, "labels": own}
    data = json.dumps(document).encode()
    name = f"{TENANT}/t.json"
    generation = store.write(f"gs://triggers/{name}", data)
    event = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=now)
    outcome = handle_delivery(governed, ObjectDelivery(event, "triggers", name, generation, len(data), "storage-event"))
    assert outcome.outcome == "launched", outcome.message
    first = f"{TENANT}--{'k' * longest}"
    attempts = [lifecycle.rerun(governed, first, force=True).run_key for _ in range(2, 12)]
    assert set(vertex_server.jobs) == {first, *attempts} and attempts[-1].endswith("-attempt-11")
    creates = [r for r in vertex_server.requests if r.method == "POST" and not r.path.endswith(":cancel")]
    assert len(creates) == 11
    for request in creates:
        check_against_discovery(request.param("pipelineJobId"), request.json)
    relays = {"relay-tenant": TENANT, "relay-pipeline": "echo"}
    assert vertex_server.jobs[first]["labels"].items() >= {**own, **relays, "relay-trigger": "object"}.items()
    assert vertex_server.jobs[attempts[0]]["labels"].items() >= {**own, **relays, "relay-trigger": "rerun"}.items()
