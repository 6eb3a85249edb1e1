"""The embedded destination: algorithms are Python trees in a local folder, each call a worker process.

Names here: `data://.my/<c>/<f>` becomes `data://local/<c>/<f>` (stored at `<root>/data/<c>/<f>`) and
`algo://.my/<name>` becomes `algo://local/<name>` (the tree `<root>/algorithms/<name>/`, with `<name>.py` at its top
or under `src/` defining `apply(input)`, the seed's convention).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines.steps.ratchet.clusters import (
    CODE,
    CallResult,
    ClusterConfigError,
    ClusterContext,
    ClusterError,
    ExportedFile,
    options_of,
)

WORKER = Path(__file__).with_name("local_worker.py")
# What a worker inherits: enough to run Python, never the step's own environment (secrets, cloud credentials).
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
_STDERR_TAIL = 2000


class LocalCluster:
    kind = "local"

    def __init__(self, root: Path, python: str = sys.executable) -> None:
        self.root = root
        self._python = python

    @classmethod
    def from_options(cls, config: Mapping[str, Any], context: ClusterContext) -> LocalCluster:
        options = options_of(config, ("root",), "local")
        root = options.get("root") or str(Path(tempfile.gettempdir()) / "relay-ratchet" / context.workflow)
        if not isinstance(root, str):
            raise ClusterConfigError(f"destination.root: expected a folder path, found {root!r}")
        return cls(Path(root.removeprefix("file://")).resolve())

    def data_name(self, collection: str, path: str) -> str:
        return f"data://local/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return f"algo://local/{name}"

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        algorithms = self.root / "algorithms"
        staging = algorithms / f".{algorithm}.deploying"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            for item in files:
                base = staging if item.kind == CODE else self.root / "data" / item.collection
                target = _inside(base, item.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.data)
            if not any((staging / sub / f"{algorithm}.py").is_file() for sub in (".", "src")):
                shown = sorted(f.path for f in files if f.kind == CODE)[:10]
                raise ClusterError(f"{algorithm}: expected {algorithm}.py (or src/{algorithm}.py), found {shown}")
            # Swap the whole tree, so that no file of an older version lingers next to the new ones.
            tree = algorithms / algorithm
            shutil.rmtree(tree, ignore_errors=True)
            staging.rename(tree)
        except OSError as exc:
            raise ClusterError(f"{algorithm}: cannot install into {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        tree = self.root / "algorithms" / name
        if not tree.is_dir():
            return CallResult(ok=False, error=f"{name}: not deployed in {self.root}")
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
        started = time.monotonic()
        # Its own session: a kill at the timeout takes whatever the algorithm started with it.
        worker = subprocess.Popen(
            [self._python, "-P", str(WORKER), str(self.root), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tree,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = worker.communicate(json.dumps({"input": payload}).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(worker)
            elapsed = time.monotonic() - started
            return CallResult(
                ok=False, error=f"timed out after {timeout:g} s: the worker was killed", seconds=elapsed, timed_out=True
            )
        return _reply(name, out, err, worker.returncode, time.monotonic() - started)


def _reply(name: str, out: bytes, err: bytes, returncode: int, elapsed: float) -> CallResult:
    try:
        reply = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace")[-_STDERR_TAIL:].strip()
        return CallResult(ok=False, error=f"{name}: the worker exited {returncode} without a reply: {tail}")
    if not reply.get("ok"):
        # apply's own time when it ran (as for a success); the whole call's when it failed before, e.g. to load.
        return CallResult(ok=False, error=str(reply.get("error")), seconds=float(reply.get("seconds", elapsed)))
    return CallResult(ok=True, output=reply.get("output"), seconds=float(reply["seconds"]))


def _kill(worker: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended between the timeout and the kill
        os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate()


def _inside(base: Path, relative: str) -> Path:
    """`base/relative`, refusing paths that would leave `base` (an archive's `../x`, an absolute name)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ClusterError(f"{relative!r}: expected a relative path inside the algorithm's tree")
    return base.joinpath(*parts)
