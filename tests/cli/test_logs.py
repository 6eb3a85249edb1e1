"""`relay logs`: a local run's own output, and where KFP and Vertex AI keep theirs (their loopback APIs)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay import naming, records
from relay.adapters.routing import RoutingBlobStore
from relay.service import Relay
from relaycli.config import Context
from relaycli.logs import VERTEX_RESOURCE, vertex_filter
from relaycli.sync import relay_for
from tests.cli.support import ECHO, Ran, drop, run
from tests.conftest import CATALOG
from tests.servers.cloud_logging import CloudLoggingServer
from tests.servers.kfp import KfpApiServer
from tests.servers.vertex import VertexServer

Cli = Callable[..., Ran]


def backend_cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], blobs: RoutingBlobStore) -> tuple[Relay, Cli]:
    """The functions' Relay on `env`, and `relay` with the same environment and records."""

    def command(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    return relay_for(Context(env=env, store=blobs), None), command


def wait_for_result(results: str, key: str, seconds: float = 90.0) -> None:
    path = Path(naming.result_record(results, key))
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.fixture
def local_env(results: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_BACKEND": "local",
        "RELAY_LOCAL_ROOT": str(tmp_path / "local"),
    }
    for name, value in env.items():  # the runner process reads its settings from the environment
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RELAY_NOTIFY_TOPIC", raising=False)
    return env


def test_a_failed_local_run_shows_its_tasks_output_and_its_error(
    capsys: pytest.CaptureFixture[str], local_env: dict[str, str], blobs: RoutingBlobStore, results: str
):
    relay, cli = backend_cli(capsys, local_env, blobs)
    launched = drop(relay, {**ECHO, "parameters": {**ECHO["parameters"], "fail": True}}, "fails.json")
    assert launched.outcome == "launched" and launched.run_key
    key = launched.run_key
    wait_for_result(results, key)
    log = (Path(local_env["RELAY_LOCAL_ROOT"]) / key / "runner.log").read_text()
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # kfp.local's colours, not for a pipe
    shown = cli("logs", key)
    assert shown.code == 0 and shown.out == log and "asked to fail: hello" in shown.out
    assert shown.err.startswith(f"{key} failed: ")
    last = cli("logs", key, "--tail", "2")
    assert last.out.splitlines() == log.splitlines()[-2:]
    via_trigger = cli("logs", "gs://triggers/fails.json", "--tail", "1")
    assert via_trigger.out.splitlines() == log.splitlines()[-1:]


def test_a_run_that_never_launched_has_no_logs(cli: Cli, relay: Relay):
    rejected = drop(relay, {"pipeline": "echo"}, "bad.json")
    ran = cli("logs", rejected.run_key)
    assert ran.code == 1 and ran.err.startswith(f"relay logs: {rejected.run_key} was rejected: no run, so no logs")
    missing = cli("logs", "echo-0123456789abcdef0123")
    assert missing.code == 1 and "expected records under" in missing.err


def test_a_local_record_cannot_point_the_log_reader_elsewhere(
    capsys: pytest.CaptureFixture[str], local_env: dict[str, str], blobs: RoutingBlobStore, tmp_path: Path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "runner.log").write_text("not this run's\n")
    key = "echo-0123456789abcdef0123"
    launch = {"state": "launched", "backend": "local", "run_url": elsewhere.as_uri(), "trigger": {}}
    blobs.write(naming.launch_record(local_env["RELAY_RESULTS_URI"], key), records.encode(launch))
    ran = run(capsys, ["logs", key], env=local_env, store=blobs)
    assert ran.code == 1 and ran.out == "" and f"{key}: expected the runner's log runner.log" in ran.err


@pytest.fixture
def kfp() -> Iterator[KfpApiServer]:
    with KfpApiServer() as server:
        yield server


def test_a_kfp_run_gets_its_page(
    capsys: pytest.CaptureFixture[str], results: str, blobs: RoutingBlobStore, kfp: KfpApiServer
):
    env = {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_BACKEND": "kfp",
        "RELAY_KFP_HOST": kfp.url,
        "RELAY_AUTH": "static",
        "RELAY_STATIC_TOKEN": "test-token",
    }
    relay, cli = backend_cli(capsys, env, blobs)
    launched = drop(relay, ECHO, "t.json")
    ran = cli("logs", launched.run_key)
    assert ran.code == 0
    assert ran.out.splitlines()[0] == f"run      {kfp.url}/#/runs/details/{launched.run_id}"
    assert "KFP's API serves no task logs" in ran.out and "test-token" not in ran.out


@pytest.fixture
def vertex() -> Iterator[VertexServer]:
    with VertexServer() as server:
        yield server


@pytest.fixture
def cloud_logging() -> Iterator[CloudLoggingServer]:
    with CloudLoggingServer(token_check=lambda token: token == "test-token") as server:
        yield server


def vertex_env(results: str, vertex: VertexServer, cloud_logging: CloudLoggingServer) -> dict[str, str]:
    return {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_BACKEND": "vertex",
        "RELAY_VERTEX_PROJECT": "relay-test",
        "RELAY_VERTEX_LOCATION": "us-central1",
        "RELAY_VERTEX_PIPELINE_ROOT": "gs://relay-pipeline-root",
        "RELAY_VERTEX_SERVICE_ACCOUNT": "pipelines@relay-test.iam.gserviceaccount.com",
        "RELAY_VERTEX_ENDPOINT": vertex.url,
        "RELAY_LOGGING_ENDPOINT": cloud_logging.url,
        "RELAY_AUTH": "static",
        "RELAY_STATIC_TOKEN": "test-token",
    }


def test_a_vertex_run_gets_its_page_its_logs_query_and_its_lines(
    capsys: pytest.CaptureFixture[str],
    results: str,
    blobs: RoutingBlobStore,
    vertex: VertexServer,
    cloud_logging: CloudLoggingServer,
):
    relay, cli = backend_cli(capsys, vertex_env(results, vertex, cloud_logging), blobs)
    launched = drop(relay, ECHO, "t.json")
    assert launched.outcome == "launched", launched.message
    key = launched.run_key or ""
    job = {"pipeline_job_id": key}
    # More than a page (1000), stored out of order; another job's entry, and one in another project.
    for n in reversed(range(1002)):
        cloud_logging.add(
            "relay-test",
            VERTEX_RESOURCE,
            job,
            timestamp=f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}Z",
            severity="INFO",
            textPayload=f"line {n}",
        )
    cloud_logging.add(
        "relay-test",
        VERTEX_RESOURCE,
        job,
        timestamp="2026-12-07T11:00:00Z",
        severity="ERROR",
        jsonPayload={"message": "task describe failed"},
    )
    cloud_logging.add(
        "relay-test",
        VERTEX_RESOURCE,
        {"pipeline_job_id": "other"},
        timestamp="2026-12-07T10:00:00Z",
        textPayload="not this job",
    )
    cloud_logging.add("elsewhere", VERTEX_RESOURCE, job, timestamp="2026-12-07T10:00:00Z", textPayload="not here")
    ran = cli("logs", key)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    console = f"https://console.cloud.google.com/vertex-ai/locations/us-central1/pipelines/runs/{key}"
    assert lines[0] == f"run       {console}?project=relay-test"
    assert lines[1].startswith("logs      https://console.cloud.google.com/logs/query;query=")
    assert f"  gcloud logging read '{vertex_filter(key)}' --project relay-test --order asc" in lines
    shown = lines[lines.index("") + 4 :]
    assert shown[0] == "2026-12-07T10:00:00Z INFO line 0" and len(shown) == 1003
    assert shown[-1] == "2026-12-07T11:00:00Z ERROR task describe failed"
    assert "not this job" not in ran.out and "not here" not in ran.out
    last = cli("logs", key, "--tail", "2").out.splitlines()[-2:]
    assert last == ["2026-12-07T10:16:41Z INFO line 1001", "2026-12-07T11:00:00Z ERROR task describe failed"]
    assert vertex_filter(key) == (
        f'resource.type="aiplatform.googleapis.com/PipelineJob" AND resource.labels.pipeline_job_id="{key}"'
    )


def test_credentials_that_may_not_read_the_logs_still_get_the_links(
    capsys: pytest.CaptureFixture[str],
    results: str,
    blobs: RoutingBlobStore,
    vertex: VertexServer,
    cloud_logging: CloudLoggingServer,
):
    env = vertex_env(results, vertex, cloud_logging)
    relay, _ = backend_cli(capsys, env, blobs)
    key = drop(relay, ECHO, "t.json").run_key or ""
    cloud_logging.add("relay-test", VERTEX_RESOURCE, {"pipeline_job_id": key}, textPayload="secret line")
    ran = run(capsys, ["logs", key], env={**env, "RELAY_STATIC_TOKEN": "someone-else"}, store=blobs)
    assert ran.code == 0 and "secret line" not in ran.out and "someone-else" not in ran.out + ran.err
    assert ran.out.startswith("run       https://console.cloud.google.com/vertex-ai/")
    assert ran.err.startswith("relay logs: no lines read from Cloud Logging: ")
    assert "401" in ran.err or "UNAUTHENTICATED" in ran.err
