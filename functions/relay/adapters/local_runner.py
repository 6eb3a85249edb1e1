"""Runs one local pipeline to its end and records how it ended: `python -m relay.adapters.local_runner DIR`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay import chain_runs, drain, records, runtime
from relay.adapters.local_backend import LOCK_FILE, LOG_FILE, PID_FILE, REQUEST_FILE, STARTED_FILE
from relay.config import Settings
from relay.errors import TransientError
from relay.results import record_result
from relay.service import Relay


def run(run_dir: Path, settings: Settings) -> int:
    with (run_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a runner for this run is already going
        # Before the started mark, so a started folder always names its runner: how the backend tells it still
        # runs, and stops it. A later runner that gets here finds the mark and exits; its pid names no live runner.
        (run_dir / PID_FILE).write_text(str(os.getpid()))
        try:
            (run_dir / STARTED_FILE).touch(exist_ok=False)
        except FileExistsError:
            return 0  # this run folder has run (or is running) already
        request = json.loads((run_dir / REQUEST_FILE).read_text())
        parameters = json.loads((run_dir / "parameters.json").read_text())
        relay = runtime.build_relay(settings)
        # The steps inherit this process's environment: they read the same policy, and know they run locally.
        os.environ.update(step_environment(relay))
        started = datetime.now(UTC)
        succeeded, message, outputs = _execute(run_dir, parameters)
        finished = datetime.now(UTC)
        record = records.result_record(
            run_key=request["run_key"],
            pipeline=request["pipeline"],
            backend="local",
            run_id=request["run_id"],
            succeeded=succeeded,
            message=message,
            outputs=outputs,
            metrics={"seconds": round((finished - started).total_seconds(), 3)},
            started=started,
            finished=finished,
        )
        # A pipeline with its own exit handler has written a richer result already: that one stands.
        record_result(relay.store, relay.notifier, request["results_uri"], record)
        with contextlib.suppress(TransientError):  # its chain.json stays: the next reconcile tick starts them
            chain_runs.follow(relay, request["run_key"])  # what its chain starts next
        drain.drain(relay)  # its slots are free: the next queued run may go
        return 0 if succeeded else 1


def step_environment(relay: Relay) -> dict[str, str]:
    """What the local steps need to apply the deployment's policy as the functions did."""
    settings = relay.settings
    return {
        "RELAY_BACKEND": "local",
        "RELAY_RESULTS_URI": settings.results_uri,
        "RELAY_CATALOG_URI": settings.catalog_uri,
        "RELAY_POLICY_URI": relay.policy.source,
    }


def _execute(run_dir: Path, parameters: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    from kfp import components, local  # only the runner's process loads kfp, never the function that starts it

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / "outputs"),
        workspace_root=str(run_dir / "workspace"),
    )
    pipeline = components.load_component_from_file(str(run_dir / "pipeline.yaml"))
    try:
        task = pipeline(**parameters)
    except Exception as exc:  # kfp.local raises RuntimeError for a failed task; any failure ends the run
        message = _ANSI.sub("", str(exc))
        return False, f"{message} The tasks' output is in {run_dir / LOG_FILE}", {}
    outputs = {name: _plain(value) for name, value in (task.outputs or {}).items()}
    return True, "pipeline finished", outputs


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours its messages for a terminal


def _plain(value: object) -> object:
    uri = getattr(value, "uri", None)
    return uri if isinstance(uri, str) else value


def detach(run_dir: Path) -> int:
    """Start the runner for `run_dir` in its own session, print its pid, and return at once."""
    with (run_dir / LOG_FILE).open("ab") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "relay.adapters.local_runner", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=run_dir,
            start_new_session=True,
        )
    print(runner.pid)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--detach":
        sys.exit(detach(Path(sys.argv[2])))
    sys.exit(run(Path(sys.argv[1]), Settings.from_env(os.environ)))
