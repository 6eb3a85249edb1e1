"""The local backend runs the compiled pipeline with kfp.local in a process of its own."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from relay import naming, records
from relay.adapters.local_backend import LocalBackend
from relay.ports import LaunchedRun, LaunchRequest
from tests.conftest import echo_request
from tests.fakes import MemoryBlobStore


def wait_for(path: Path, seconds: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)
    return records.decode(path.read_bytes())


def running(pid: int) -> bool:
    """Alive and not a zombie (nothing reaps the detached runners' zombies in this container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def request(run_key: str, results: Path, **parameters: object) -> LaunchRequest:
    return echo_request(run_key, **parameters, run_key=run_key, results_uri=str(results))


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    results = tmp_path / "results"
    monkeypatch.setenv("RELAY_RESULTS_URI", str(results))  # the runner process reads its settings from env
    monkeypatch.delenv("RELAY_NOTIFY_TOPIC", raising=False)
    return results


def test_a_run_executes_and_records_its_result(tmp_path: Path, results: Path):
    backend = LocalBackend(tmp_path / "local", str(results))
    run = backend.launch(request("echo-ok", results, count=2, items=["a"]))
    assert run.run_id.startswith("local-") and run.url.startswith("file://")
    result = wait_for(Path(naming.result_record(str(results), "echo-ok")))
    assert result["state"] == "succeeded" and result["status"] == 200 and result["run_id"] == run.run_id
    assert result["outputs"]["Output"].startswith("echo-ok: hi x2")
    assert result["metrics"]["seconds"] > 0
    assert backend.find_run("echo-ok") == run
    assert backend.launch(request("echo-ok", results)) == run  # the run folder is the guard


def test_a_failing_task_is_recorded_as_failed(tmp_path: Path, results: Path):
    backend = LocalBackend(tmp_path / "local", str(results))
    backend.launch(request("echo-fail", results, fail=True))
    result = wait_for(Path(naming.result_record(str(results), "echo-fail")))
    assert result["state"] == "failed" and result["status"] == 500
    log = (tmp_path / "local" / "echo-fail" / "runner.log").read_text()
    assert "asked to fail: hi" in log


def test_unknown_runs_are_not_found(tmp_path: Path):
    assert LocalBackend(tmp_path, str(tmp_path / "results")).find_run("nope") is None


def test_a_second_start_after_a_crash_never_runs_the_pipeline_twice(tmp_path: Path, results: Path):
    backend = LocalBackend(tmp_path / "local", str(results))
    run = backend.launch(request("echo-once", results))
    wait_for(Path(naming.result_record(str(results), "echo-once")))
    run_dir = tmp_path / "local" / "echo-once"
    (run_dir / "run.json").unlink()  # as if the holder crashed right after starting the runner
    assert backend.launch(request("echo-once", results)).run_id == run.run_id
    second = json.loads((run_dir / "run.json").read_text())["pid"]
    deadline = time.monotonic() + 30
    while running(second):
        assert time.monotonic() < deadline, "the second runner did not exit"
        time.sleep(0.05)
    log = (run_dir / "runner.log").read_text()
    assert log.count("Executing task") == 1, log


def test_after_the_results_store_is_wiped_a_reused_run_key_runs_afresh(tmp_path: Path, results: Path):
    # `make up` restarted: fake-gcs-server's memory (the records) is gone, the run folders on disk are not.
    first = LocalBackend(tmp_path / "local", str(results)).launch(request("echo-again", results))
    wait_for(Path(naming.result_record(str(results), "echo-again")))
    shutil.rmtree(results)

    backend = LocalBackend(tmp_path / "local", str(results))  # a new function process, as after a restart
    assert backend.find_run("echo-again") is None  # no record of it, so no run of it either
    second = backend.launch(request("echo-again", results))
    assert second.run_id != first.run_id and second.url == first.url
    result = wait_for(Path(naming.result_record(str(results), "echo-again")))
    assert result["run_id"] == second.run_id and result["state"] == "succeeded"
    assert backend.find_run("echo-again") == second
    # The earlier run's folder is kept beside it, with its outputs, under a name no run key can take.
    [aside] = [path for path in (tmp_path / "local").iterdir() if path.name.startswith("echo-again.")]
    assert json.loads((aside / "run.json").read_text())["run_id"] == first.run_id


def test_while_the_results_store_keeps_its_records_the_run_folder_is_the_guard(tmp_path: Path, results: Path):
    run = LocalBackend(tmp_path / "local", str(results)).launch(request("echo-kept", results))
    again = LocalBackend(tmp_path / "local", str(results))  # a restart that kept the store
    assert again.find_run("echo-kept") == run and again.launch(request("echo-kept", results)) == run
    wait_for(Path(naming.result_record(str(results), "echo-kept")))
    assert [path.name for path in (tmp_path / "local").iterdir()] == ["echo-kept"]


def test_the_store_id_is_created_once_however_many_instances_ask(tmp_path: Path):
    store = MemoryBlobStore()
    backends = [LocalBackend(tmp_path, "gs://results/relay", store) for _ in range(3)]
    assert [backend.find_run("nope") for backend in backends] == [None, None, None]
    [uri] = store.uris("gs://results/relay/")
    assert uri == "gs://results/relay/local-backend.json"
    instance = json.loads(store.read(uri).data)["instance"]
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "run.json").write_text(json.dumps({"run_id": "local-1", "store_instance": instance}))
    assert {backend.find_run("k") for backend in backends} == {LaunchedRun("local-1", (tmp_path / "k").as_uri())}
