"""run_state and terminate of each backend, on the loopback KFP and Vertex servers and on real local processes;
and one reconcile tick over each, on records in a real results folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay import lifecycle, naming, records
from relay.adapters.kfp_backend import KfpBackend
from relay.adapters.local_backend import LocalBackend
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.vertex_backend import VertexBackend
from relay.catalog import Catalog
from relay.config import Settings
from relay.ports import PipelineBackend, TokenSource
from relay.service import Relay
from tests.conftest import echo_request
from tests.servers.kfp import KfpApiServer
from tests.servers.vertex import VertexServer


def vertex(server: VertexServer, tokens: TokenSource) -> VertexBackend:
    return VertexBackend(
        project="relay-test",
        location="us-central1",
        pipeline_root="gs://relay-pipeline-root",
        endpoint=server.url,
        tokens=tokens,
    )


def test_kfp_states_errors_and_terminate(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    run = backend.launch(echo_request("echo-1"))
    assert backend.run_state("echo-1", run.run_id).state == "pending"
    kfp_server.set_run_state(run.run_id, "RUNNING")
    running = backend.run_state("echo-1", run.run_id)
    assert running.state == "running" and running.started_at is not None
    backend.terminate("echo-1", run.run_id)
    cancelled = backend.run_state("echo-1", run.run_id)
    assert cancelled.state == "cancelled" and cancelled.terminal and cancelled.finished_at is not None
    other = backend.launch(echo_request("echo-2"))
    kfp_server.set_run_state(other.run_id, "FAILED", "task describe: exit code 1\nTraceback: …")
    failed = backend.run_state("echo-2", other.run_id)
    assert failed.state == "failed" and failed.message == "task describe: exit code 1 Traceback: …"
    assert failed.failure == "user"  # UNKNOWN: the pipeline's own code, as far as anyone can tell
    lost = backend.launch(echo_request("echo-3"))
    kfp_server.set_run_state(lost.run_id, "FAILED", "connection to the cluster lost", code=14)
    assert backend.run_state("echo-3", lost.run_id).failure == "infrastructure"
    assert running.failure == cancelled.failure == ""
    assert backend.run_state("gone", "no-such-run").state == "missing"
    paths = [(r.method, r.path) for r in kfp_server.requests if ":terminate" in r.path]
    assert paths == [("POST", f"/apis/v2beta1/runs/{run.run_id}:terminate")]


def test_vertex_states_errors_and_cancel(vertex_server: VertexServer, tokens: TokenSource):
    backend = vertex(vertex_server, tokens)
    backend.launch(echo_request("echo-1"))
    assert backend.run_state("echo-1", "echo-1").state == "pending"
    vertex_server.set_state("echo-1", "PIPELINE_STATE_RUNNING")
    assert backend.run_state("echo-1", "echo-1").state == "running"
    backend.terminate("echo-1", "echo-1")
    assert backend.run_state("echo-1", "echo-1").state == "cancelled"
    backend.terminate("echo-1", "echo-1")  # ended already: Vertex's FAILED_PRECONDITION is not an error
    backend.launch(echo_request("echo-2"))
    vertex_server.set_state("echo-2", "PIPELINE_STATE_FAILED", "The preflight validation failed: quota")
    failed = backend.run_state("echo-2", "echo-2")
    assert failed.state == "failed" and failed.message == "The preflight validation failed: quota"
    assert failed.failure == "user"  # FAILED_PRECONDITION: a task of the job failed
    backend.launch(echo_request("echo-3"))
    vertex_server.set_state("echo-3", "PIPELINE_STATE_FAILED", "Task train: the Spot VM was preempted")
    assert backend.run_state("echo-3", "echo-3").failure == "preempted"
    backend.launch(echo_request("echo-4"))
    vertex_server.set_state("echo-4", "PIPELINE_STATE_FAILED", "Invalid value for parameter count", code=3)
    assert backend.run_state("echo-4", "echo-4").failure == "parameter"
    assert backend.run_state("gone", "gone").state == "missing"


def relay_on(tmp_path: Path, backend: PipelineBackend) -> Relay:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    store = LocalBlobStore(results)
    settings = Settings(results_uri=str(results), backend="local")
    return Relay(settings=settings, store=store, catalog=Catalog(store, str(results)), backend=backend)


def launched(relay: Relay, run_key: str, run_id: str) -> None:
    """The launch record the service writes, for a run made on the backend directly."""
    claim = records.claim_record(
        run_key=run_key,
        pipeline="echo",
        backend=relay.backend.name,
        trigger={"uri": "gs://triggers/t.json", "event_id": "e"},
        parameters={"message": "hi"},
        labels={},
        now=relay.clock(),
        lease_seconds=600,
    )
    record = records.launched_record(claim, run_id=run_id, run_url="u", now=relay.clock())
    relay.store.write(naming.launch_record(relay.settings.results_uri, run_key), records.encode(record))


def result(relay: Relay, run_key: str) -> dict[str, object]:
    return records.decode(relay.store.read(naming.result_record(relay.settings.results_uri, run_key)).data)


@pytest.mark.parametrize("kind", ["kfp", "vertex"])
def test_a_run_terminated_on_the_backend_ends_cancelled_after_one_tick(
    kind: str, kfp_server: KfpApiServer, vertex_server: VertexServer, tokens: TokenSource, tmp_path: Path
):
    backend: PipelineBackend
    if kind == "kfp":
        backend = KfpBackend(kfp_server.url, "relay", tokens)
        run_id = backend.launch(echo_request("echo-1")).run_id
        kfp_server.set_run_state(run_id, "CANCELED")  # someone pressed Terminate in the KFP UI
    else:
        backend = vertex(vertex_server, tokens)
        run_id = backend.launch(echo_request("echo-1")).run_id
        vertex_server.set_state("echo-1", "PIPELINE_STATE_CANCELLED")
    relay = relay_on(tmp_path, backend)
    launched(relay, "echo-1", run_id)
    [seen] = lifecycle.reconcile(relay).seen
    assert seen.action == "result"
    ended = result(relay, "echo-1")
    assert ended["state"] == "cancelled" and ended["status"] == 499 and ended["run_id"] == run_id


def fake_runner(run_dir: Path) -> subprocess.Popen[bytes]:
    """A process that looks like the local runner of `run_dir` (its command line names both) and runs until
    stopped: the local backend is asked about it without a pipeline racing the test to its end."""
    runner = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "relay.adapters.local_runner", str(run_dir)],
        start_new_session=True,
    )
    # The real runner writes its pid once it runs; this one's is written once it has exec'd (until then /proc shows
    # the forking test's command line, which is no runner's).
    deadline = time.monotonic() + 10
    while b"relay.adapters.local_runner" not in Path(f"/proc/{runner.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the stand-in runner never started"
        time.sleep(0.01)
    (run_dir / "runner.pid").write_text(str(runner.pid))
    (run_dir / "started").touch()
    return runner


def test_the_local_backend_follows_and_stops_its_runner(tmp_path: Path):
    relay = relay_on(tmp_path, LocalBackend(tmp_path / "local", str(tmp_path / "results")))
    backend = relay.backend
    # The results store's id for its run folders, as the first launch would make it.
    store_id = "store-1"
    relay.store.write(naming.join(relay.settings.results_uri, "local-backend.json"), b'{"instance": "store-1"}')
    run_dir = tmp_path / "local" / "echo-1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "local-1", "store_instance": store_id, "pid": 1}))
    assert backend.run_state("echo-1", "local-1").state == "pending"  # launched, runner not started
    runner = fake_runner(run_dir)
    try:
        assert backend.run_state("echo-1", "local-1").state == "running"
        launched(relay, "echo-1", "local-1")
        answer = lifecycle.cancel(relay, "echo-1")
        assert answer.changed and runner.wait(timeout=10) != 0  # stopped by the signal
    finally:
        runner.kill()
        runner.wait()
    assert backend.run_state("echo-1", "local-1").state == "cancelled"
    assert result(relay, "echo-1")["state"] == "cancelled"


def test_a_local_runner_that_died_without_a_result_ends_failed_after_one_tick(tmp_path: Path):
    relay = relay_on(tmp_path, LocalBackend(tmp_path / "local", str(tmp_path / "results")))
    relay.store.write(naming.join(relay.settings.results_uri, "local-backend.json"), b'{"instance": "s"}')
    run_dir = tmp_path / "local" / "echo-1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "local-1", "store_instance": "s", "pid": 1}))
    runner = fake_runner(run_dir)
    runner.kill()  # out of memory, say: no result, no cancel mark
    runner.wait()
    launched(relay, "echo-1", "local-1")
    [seen] = lifecycle.reconcile(relay).seen
    assert (seen.backend, seen.action) == ("failed", "result")
    assert "stopped without recording a result" in str(result(relay, "echo-1")["message"])
    assert result(relay, "echo-1")["failure"] == "infrastructure"  # its code never said it failed
