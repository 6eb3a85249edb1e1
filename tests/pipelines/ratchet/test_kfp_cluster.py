"""The kfp destination against the loopback KFP API: pipelines are uploaded, calls are runs waited on."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines.steps.egress import Egress, EgressError
from pipelines.steps.ratchet.clusters import ClusterConfigError, ClusterContext, ClusterError, ExportedFile
from pipelines.steps.ratchet.clusters.kfp import KfpCluster
from tests.conftest import CATALOG
from tests.fakes import MemoryBlobStore
from tests.servers.kfp import KfpApiServer

ECHO = (CATALOG / "echo.yaml").read_bytes()
TOKEN = "kfp-t0ken"
LOOPBACK = Egress.loopback()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KfpApiServer]:
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with KfpApiServer(token_check=lambda token: token == TOKEN) as api:
        yield api
    assert api.errors == []


def cluster_for(
    server: KfpApiServer, tmp_path: Path, blobs: MemoryBlobStore | None = None, **options: Any
) -> KfpCluster:
    config = {"kind": "kfp", "host": server.url, "token": TOKEN, "poll_seconds": 0.02, **options}
    # The API listens on 127.0.0.1, which deployed pipelines refuse: a local run's egress allows it.
    return KfpCluster.from_options(config, ClusterContext(tmp_path / "work", "w", blobs=blobs, egress=LOOPBACK))


@contextmanager
def runs_finish(server: KfpApiServer, state: str = "SUCCEEDED", error: str | None = None) -> Iterator[None]:
    """Plays the cluster: every new run reaches `state` shortly after it is created."""
    stop = threading.Event()

    def finish() -> None:
        while not stop.wait(0.02):
            for run in server.runs:
                if run["state"] == "PENDING":
                    server.set_run_state(run["run_id"], "RUNNING")
                    server.set_run_state(run["run_id"], state, error)

    worker = threading.Thread(target=finish, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def package(data: bytes = ECHO, name: str = "echo.yaml") -> list[ExportedFile]:
    return [ExportedFile("code", name, data), ExportedFile("code", "README.md", b"not the package")]


def test_deploy_uploads_the_pipeline_and_a_call_is_a_run_of_that_version(server: KfpApiServer, tmp_path: Path):
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    (pipeline,) = server.pipelines
    (version,) = server.pipeline_versions
    assert pipeline["display_name"] == "ratchet-echo" and version["pipeline_id"] == pipeline["pipeline_id"]
    with runs_finish(server):
        result = cluster.call("echo", {"message": "hi", "count": 2}, timeout=10)
    assert result.ok, result.error
    (run,) = server.runs
    assert result.output == {"run_id": run["run_id"], "state": "SUCCEEDED"}
    assert run["request_body"]["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["runtime_config"]["parameters"] == {"message": "hi", "count": 2}
    assert run["display_name"].startswith("ratchet-echo-")
    assert 0 <= result.seconds <= 2  # the run's own duration, as the server timed it (to the second)
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in server.requests)


def test_a_changed_package_is_a_new_version_and_the_same_one_is_reused(server: KfpApiServer, tmp_path: Path):
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    changed = ECHO.replace(b"description: ''", b"description: 'v2'") if b"description: ''" in ECHO else ECHO + b"\n"
    cluster.deploy("echo", package(changed))
    cluster.deploy("echo", package(changed))
    assert len(server.pipelines) == 1
    names = [v["display_name"] for v in server.pipeline_versions]
    assert len(names) == 2 and names[0] == "ratchet-echo" and names[1].startswith("ratchet-echo-")
    with runs_finish(server):
        assert cluster.call("echo", {"message": "v2"}, timeout=10).ok
    (run,) = server.runs
    assert (
        run["request_body"]["pipeline_version_reference"]["pipeline_version_id"]
        == (server.pipeline_versions[1]["pipeline_version_id"])
    )


def test_a_run_past_the_timeout_is_terminated_and_counted_failed(server: KfpApiServer, tmp_path: Path):
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    result = cluster.call("echo", {"message": "never ends"}, timeout=0.3)
    assert not result.ok and result.timed_out and "timed out after 0.3 s" in result.error
    (run,) = server.runs
    assert run["state"] == "CANCELED" and server.requests_to(f"/apis/v2beta1/runs/{run['run_id']}:terminate", "POST")


def test_a_failed_run_carries_its_state_but_not_the_servers_words(server: KfpApiServer, tmp_path: Path):
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    with runs_finish(server, "FAILED", f"task describe failed: OOMKilled (sent Bearer {TOKEN})"):
        result = cluster.call("echo", {"message": "x"}, timeout=10)
    (run,) = server.runs
    assert not result.ok and result.error == f"run {run['run_id']}: the run ended FAILED"
    assert result.output["state"] == "FAILED" and TOKEN not in json.dumps(result.output)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("just text", "a payload is the run's parameters: expected an object"),
        ({"message": "x", "colour": "red"}, "the KFP API answered HTTP 400 Bad Request"),
        ({"count": 1}, "the KFP API answered HTTP 400 Bad Request"),  # its message (what is missing) is not recorded
    ],
)
def test_a_payload_the_pipeline_cannot_take_fails_the_call(
    server: KfpApiServer, tmp_path: Path, payload: Any, fragment: str
):
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    result = cluster.call("echo", payload, timeout=5)
    assert not result.ok and fragment in result.error and server.runs == []


def test_run_only_calls_the_latest_version_already_there(server: KfpApiServer, tmp_path: Path):
    cluster_for(server, tmp_path).deploy("echo", package())
    fresh = cluster_for(server, tmp_path)  # another run of the step: nothing deployed by it
    with runs_finish(server):
        assert fresh.call("echo", {"message": "again"}, timeout=10).ok
    missing = fresh.call("other", {"message": "x"}, timeout=5)
    assert not missing.ok and "no pipeline 'ratchet-other'" in missing.error


def test_data_files_go_to_data_uri_and_names_follow(server: KfpApiServer, tmp_path: Path):
    blobs = MemoryBlobStore()
    cluster = cluster_for(server, tmp_path, blobs, data_uri="gs://ratchet-data/shared/")
    assert cluster.data_name("echo", "in/a.txt") == "gs://ratchet-data/shared/echo/in/a.txt"
    assert cluster.algo_name("echo", "1.0") == "ratchet-echo"
    cluster.deploy("echo", [*package(), ExportedFile("data", "in/a.txt", b"abc", "echo")])
    assert blobs.read("gs://ratchet-data/shared/echo/in/a.txt").data == b"abc"
    without = cluster_for(server, tmp_path)
    with pytest.raises(ClusterError, match="no data_uri"):
        without.deploy("echo", [*package(), ExportedFile("data", "a.txt", b"abc", "echo")])


def test_deploy_errors_carry_the_apis_message(server: KfpApiServer, tmp_path: Path):
    with pytest.raises(ClusterError, match=r"expected its compiled pipeline echo.yaml, found \['notes.txt'\]"):
        cluster_for(server, tmp_path).deploy("echo", [ExportedFile("code", "notes.txt", b"")])
    with pytest.raises(ClusterError, match=r"the KFP API answered HTTP 400 Bad Request$"):
        cluster_for(server, tmp_path).deploy("echo", package(b"not: a pipeline"))
    with pytest.raises(ClusterError, match=r"refused the token \(HTTP 401 Unauthorized\)$"):
        cluster_for(server, tmp_path, token="wrong").deploy("echo", package())


def test_the_upload_endpoints_refuse_what_kfp_refuses(server: KfpApiServer):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url}/apis/v2beta1/pipelines/upload"
    not_multipart = requests.post(url, params={"name": "p"}, data=ECHO, headers=auth, timeout=5)
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["message"]
    no_file = requests.post(url, params={"name": "p"}, files={"other": ("x.yaml", ECHO)}, headers=auth, timeout=5)
    assert no_file.status_code == 400 and "no uploadfile part" in no_file.json()["message"]
    first = requests.post(url, params={"name": "p"}, files={"uploadfile": ("p.yaml", ECHO)}, headers=auth, timeout=5)
    again = requests.post(url, params={"name": "p"}, files={"uploadfile": ("p.yaml", ECHO)}, headers=auth, timeout=5)
    assert (first.status_code, again.status_code) == (200, 409)
    version = requests.post(
        f"{server.url}/apis/v2beta1/pipelines/upload_version",
        params={"name": "v", "pipelineid": "nope"},
        files={"uploadfile": ("p.yaml", ECHO)},
        headers=auth,
        timeout=5,
    )
    assert version.status_code == 404


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"host": "http://kfp.example.com", "token": "t"}, "expected https:// (plain http only to this machine"),
        ({"host": None}, "destination.host: expected the KFP API URL"),
        ({"host": "https://kfp.example.com", "poll_seconds": 0}, "poll_seconds: expected seconds above 0"),
        ({"host": "https://kfp.example.com", "poll_seconds": 10**9}, "at most 600, found 1000000000"),
        ({"host": "https://kfp.example.com", "namespace": "x"}, "found namespace"),
    ],
)
def test_bad_kfp_destinations_are_refused(tmp_path: Path, options: dict[str, Any], fragment: str):
    with pytest.raises(ClusterConfigError) as caught:
        KfpCluster.from_options({"kind": "kfp", **options}, ClusterContext(tmp_path, "w"))
    assert fragment in str(caught.value)


def test_a_refused_token_fails_fast_once_for_the_whole_run(server: KfpApiServer, tmp_path: Path):
    cluster = cluster_for(server, tmp_path, token="wrong")
    with pytest.raises(ClusterError, match="refused the token"):
        cluster.deploy("echo", package())
    result = cluster.call("echo", {"message": "x"}, timeout=5)
    assert not result.ok and not result.retryable and "refused the token (HTTP 401 Unauthorized)" in result.error
    assert len(server.requests_to("/apis/v2beta1/healthz")) == 1  # no 5 x 5 s of kfp.Client retries, no re-probe


def test_by_default_a_loopback_host_is_refused_before_any_request(server: KfpApiServer, tmp_path: Path):
    config = {"kind": "kfp", "host": server.url, "token": TOKEN}
    with pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address") as refused:
        KfpCluster.from_options(config, ClusterContext(tmp_path, "w"))  # a deployed pipeline's default
    assert refused.value.status == 403 and server.requests == []


def test_once_built_the_client_dials_only_through_the_egress(server: KfpApiServer, tmp_path: Path):
    """kfp.Client takes no pool of its own: the adapter swaps in one that checks each connection it opens."""
    cluster = cluster_for(server, tmp_path)
    cluster.deploy("echo", package())
    pinned: Any = cluster._connected()._healthz_api.api_client.rest_client.pool_manager
    assert pinned._egress is LOOPBACK  # the pool manager of `Egress.pool_manager`, with the context's egress
    assert pinned.connection_pool_kw["cert_reqs"] == ssl.CERT_REQUIRED  # kfp's TLS settings are kept
    pinned._egress = Egress()  # as if the host now answered with an address the policy refuses
    pinned.clear()  # no open connection to reuse: the next request dials
    before = len(server.requests)
    result = cluster.call("echo", {"message": "x"}, timeout=5)
    assert not result.ok and "127.0.0.1 is a loopback address" in result.error
    assert len(server.requests) == before
