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
REQUEST_FILE = "request.json"  # what the runner reads


class LocalBackend:
    """Each run gets `<root>/<run_key>/`, and `run.json` there once its runner has started.

    Only the holder of the run key's claim calls `launch`; a holder that crashed mid-setup leaves no
    run.json, and the runner's own lock stops a second copy should one have started anyway. The runner
    (`python -m relay.adapters.local_runner DIR`) outlives the function call, so the event is answered at
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
        except OSError as exc:
            raise BackendUnavailableError(f"{run_dir}: cannot create the run folder: {exc}") from exc
        run_id = f"local-{uuid.uuid4().hex[:12]}"
        (run_dir / "pipeline.yaml").write_bytes(request.package)
        (run_dir / "parameters.json").write_text(json.dumps(dict(request.parameters)))
        run: dict[str, object] = {
            "run_id": run_id,
            "run_key": request.run_key,
            "pipeline": request.pipeline,
            "results_uri": self._results_uri,
        }
        _write_json(run_dir / REQUEST_FILE, run)
        # The launcher starts the runner in a session of its own and exits, so the runner outlives this
        # request without being left for this process to reap.
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            started = subprocess.run(
                [sys.executable, "-m", "relay.adapters.local_runner", "--detach", str(run_dir)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendUnavailableError(f"{run_dir}: could not start the local runner: {exc}") from exc
        run["pid"] = int(started.stdout.strip())
        _write_json(run_dir / RUN_FILE, run)
        return LaunchedRun(run_id=run_id, url=run_dir.as_uri())

    def find_run(self, run_key: str) -> LaunchedRun | None:
        run_dir = self._root / run_key
        try:
            run = json.loads((run_dir / RUN_FILE).read_text())
        except FileNotFoundError:
            return None
        return LaunchedRun(run_id=str(run["run_id"]), url=run_dir.as_uri())


def _write_json(path: Path, value: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)  # readers never see half a file
