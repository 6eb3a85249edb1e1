"""PipelineBackend that runs the compiled pipeline on this machine with kfp.local, in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from relay import naming
from relay.adapters.stores import results_store
from relay.errors import BackendUnavailableError, BlobNotFoundError, PreconditionFailedError
from relay.ports import (
    FAILURE_INFRASTRUCTURE,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_MISSING,
    RUN_PENDING,
    RUN_RUNNING,
    BlobStore,
    LaunchedRun,
    LaunchRequest,
    RunState,
)

RUN_FILE = "run.json"  # written once the runner has started
REQUEST_FILE = "request.json"  # what the runner reads; written once per run folder
STARTED_FILE = "started"  # the runner's own mark: a run folder executes at most once
LOCK_FILE = "runner.lock"  # held by the runner for as long as it runs
PID_FILE = "runner.pid"  # written by the runner that owns the folder
CANCELLED_FILE = "cancelled"  # written by terminate before it stops the runner
LOG_FILE = "runner.log"  # the runner's and its tasks' output: what `relay logs` shows
INSTANCE_RECORD = "local-backend.json"  # under the results location: which results store the run folders belong to
# Never handed to pipeline code: the local runner's tasks inherit its environment.
_WITHHELD = ("RELAY_STATIC_TOKEN", "RELAY_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")


class LocalBackend:
    """Each run gets `<root>/<run_key>/`, with `run.json` once its runner has started.

    Only the holder of the run key's claim calls `launch`. A holder that crashed between starting the runner and
    writing run.json leaves a takeover to start a second runner on the same folder: the request files are
    written once, and a runner that finds the folder already started exits, so the pipeline runs once. The
    runner (`python -m relay.adapters.local_runner DIR`) outlives the function call, so the event is answered at
    once, and it records the final state in the results location when the pipeline ends.

    Run folders can outlive the results store (fake-gcs-server's memory restarted, or its folder removed): records
    gone, folders kept. So each folder names the results store it was launched for (an id kept in the store itself,
    `<results>/local-backend.json`), and a folder of another store is not this store's run: it is set aside as
    `<run_key>.<store id>` for its outputs, and the run key starts afresh. Records and runs agree, both or neither.
    """

    name = "local"

    def __init__(self, root: str | Path, results_uri: str, store: BlobStore | None = None) -> None:
        self._root = Path(root).resolve()
        self._results_uri = results_uri
        if store is None:
            store = results_store(results_uri, str(self._root))
        self._store = store

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        instance = self._store_instance()
        run_dir = self._root / request.run_key
        existing = _run_of(run_dir, instance)
        if existing is not None:
            return existing
        _set_aside_if_foreign(run_dir, instance)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            run = {
                "run_id": f"local-{uuid.uuid4().hex[:12]}",
                "run_key": request.run_key,
                "pipeline": request.pipeline,
                "results_uri": self._results_uri,
                "store_instance": instance,
            }
            run = json.loads(_write_once(run_dir / REQUEST_FILE, json.dumps(run, indent=2).encode()))
            _write_once(run_dir / "pipeline.yaml", request.package)
            _write_once(run_dir / "parameters.json", json.dumps(dict(request.parameters)).encode())
        except OSError as exc:
            raise BackendUnavailableError(f"{run_dir}: cannot set up the run folder: {exc}") from exc
        request.check_deadline()
        run["pid"] = _start_runner(run_dir)
        try:
            _write_json(run_dir / RUN_FILE, run)
        except OSError as exc:
            raise BackendUnavailableError(f"{run_dir}: started, but cannot record it: {exc}") from exc
        return LaunchedRun(run_id=str(run["run_id"]), url=run_dir.as_uri())

    def find_run(self, run_key: str) -> LaunchedRun | None:
        return _run_of(self._root / run_key, self._store_instance())

    def run_state(self, run_key: str, run_id: str) -> RunState:
        """Running while its runner lives. A runner records the result before it exits, so a folder that has
        started, whose runner is gone, ended: cancelled if terminate marked it, else the runner died without a
        result (killed, out of memory)."""
        run_dir = self._root / run_key
        if self.find_run(run_key) is None:
            return RunState(RUN_MISSING, f"no local run {run_id} in {run_dir}")
        if _runner(run_dir) is not None:
            return RunState(RUN_RUNNING, started_at=_mtime(run_dir / STARTED_FILE))
        if not (run_dir / STARTED_FILE).exists():
            return RunState(RUN_PENDING)  # launched, and its runner has not taken the folder yet
        started = _mtime(run_dir / STARTED_FILE)
        if (run_dir / CANCELLED_FILE).exists():
            return RunState(RUN_CANCELLED, "terminated on request", started, _mtime(run_dir / CANCELLED_FILE))
        message = f"the local runner stopped without recording a result; see {run_dir / LOG_FILE}"
        # Its code never reported a failure: the runner was killed (or ran out of memory) under it.
        return RunState(RUN_FAILED, message, started, _mtime(run_dir / LOG_FILE), FAILURE_INFRASTRUCTURE)

    def terminate(self, run_key: str, run_id: str) -> None:
        """Mark the folder cancelled (so a later look says why it stopped), then stop the runner's whole process
        group: the runner was started in a session of its own, and kfp.local's task processes are in it."""
        run_dir = self._root / run_key
        pid = _runner(run_dir)
        if pid is None:
            return  # not running (ended, or not started yet): nothing to stop
        (run_dir / CANCELLED_FILE).touch()
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended between the look and the signal
        except OSError as exc:
            raise BackendUnavailableError(f"{run_dir}: cannot stop the local runner: {exc}") from exc

    def _store_instance(self) -> str:
        """The results store's id for the local backend, created (create-only) by the first launch it sees."""
        uri = naming.join(self._results_uri, INSTANCE_RECORD)
        for _ in range(2):  # a concurrent first launch may create it between our read and our write
            try:
                return str(json.loads(self._store.read(uri).data)["instance"])
            except BlobNotFoundError:
                pass
            instance = uuid.uuid4().hex
            try:
                self._store.write(uri, json.dumps({"instance": instance}).encode(), if_generation_match=0)
                return instance
            except PreconditionFailedError:
                continue
        raise BackendUnavailableError(f"{uri}: created and gone again; cannot tell which run folders are this store's")


def _run_of(run_dir: Path, instance: str) -> LaunchedRun | None:
    """The run in `run_dir` if its runner started for the results store `instance`."""
    try:
        run = json.loads((run_dir / RUN_FILE).read_text())
    except FileNotFoundError:
        return None
    if run.get("store_instance") != instance:
        return None
    return LaunchedRun(run_id=str(run["run_id"]), url=run_dir.as_uri())


def _runner(run_dir: Path) -> int | None:
    """The pid of the runner executing `run_dir` while it lives, else None.

    The runner writes its pid once it owns the folder (a second runner that finds it taken writes none). Its lock
    is never probed by taking it: a probe holding it for an instant would make a starting runner think another
    runs the folder, and exit. On Linux the process must still be that runner (not a zombie, not a reused pid)."""
    try:
        pid = int((run_dir / PID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")  # empty for a zombie
        except OSError:
            return None
        return pid if str(run_dir).encode() in command and b"relay.adapters.local_runner" in command else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's: not ours to stop, but it runs
    return pid


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def _set_aside_if_foreign(run_dir: Path, instance: str) -> None:
    """Move a folder launched for another results store out of the run key's way (kept: its outputs may matter)."""
    try:
        found = json.loads((run_dir / REQUEST_FILE).read_text()).get("store_instance")
    except FileNotFoundError:
        return  # no folder, or one whose request was never written: nothing in it belongs to any run yet
    if found == instance:
        return
    # A "." never appears in a run key, so the new name cannot be any run's folder; the suffix keeps it unique.
    aside = run_dir.with_name(f"{run_dir.name}.{found or 'unknown'}.{uuid.uuid4().hex[:8]}")
    try:
        run_dir.rename(aside)
    except FileNotFoundError:
        pass  # a concurrent takeover moved it first
    except OSError as exc:
        problem = f"{run_dir}: launched for another results store ({found}), and cannot be moved aside: {exc}"
        raise BackendUnavailableError(problem) from exc


def _start_runner(run_dir: Path) -> int:
    """Start the runner through a launcher that exits at once, so it outlives this request unreaped."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {name: value for name, value in os.environ.items() if name not in _WITHHELD}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    try:
        started = subprocess.run(
            [sys.executable, "-m", "relay.adapters.local_runner", "--detach", str(run_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(started.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise BackendUnavailableError(f"{run_dir}: could not start the local runner: {exc}") from exc


def _write_once(path: Path, data: bytes) -> bytes:
    """Create `path` with `data` unless it exists; return what it holds."""
    try:
        with path.open("xb") as out:
            out.write(data)
        return data
    except FileExistsError:
        return path.read_bytes()


def _write_json(path: Path, value: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)  # readers never see half a file
