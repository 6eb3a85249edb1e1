"""PipelineBackend that runs the compiled pipeline on this machine with kfp.local, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from relay.errors import BackendUnavailableError
from relay.ports import LaunchedRun, LaunchRequest

RUN_FILE = "run.json"  # written once the runner has started
REQUEST_FILE = "request.json"  # what the runner reads; written once per run folder
STARTED_FILE = "started"  # the runner's own mark: a run folder executes at most once
# Never handed to pipeline code: the local runner's tasks inherit its environment.
_WITHHELD = ("RELAY_STATIC_TOKEN", "RELAY_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")


class LocalBackend:
    """Each run gets `<root>/<run_key>/`, with `run.json` once its runner has started.

    Only the holder of the run key's claim calls `launch`. A holder that crashed between starting the runner and
    writing run.json leaves a takeover to start a second runner on the same folder: the request files are
    written once, and a runner that finds the folder already started exits, so the pipeline runs once. The
    runner (`python -m relay.adapters.local_runner DIR`) outlives the function call, so the event is answered at
    once, and it records the final state in the results location when the pipeline ends.
    """

    name = "local"

    def __init__(self, root: str | Path, results_uri: str) -> None:
        self._root = Path(root).resolve()
        self._results_uri = results_uri

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        existing = self.find_run(request.run_key)
        if existing is not None:
            return existing
        run_dir = self._root / request.run_key
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            run = {
                "run_id": f"local-{uuid.uuid4().hex[:12]}",
                "run_key": request.run_key,
                "pipeline": request.pipeline,
                "results_uri": self._results_uri,
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
        run_dir = self._root / run_key
        try:
            run = json.loads((run_dir / RUN_FILE).read_text())
        except FileNotFoundError:
            return None
        return LaunchedRun(run_id=str(run["run_id"]), url=run_dir.as_uri())


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
