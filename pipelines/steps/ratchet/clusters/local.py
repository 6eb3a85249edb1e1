"""The embedded destination: algorithms are Python trees in a local folder, each call a worker process.

Names here: `data://.my/<c>/<f>` becomes `data://local/<c>/<f>` (stored at `<root>/data/<c>/<f>`) and
`algo://.my/<name>` becomes `algo://local/<name>` (the tree `<root>/algorithms/<name>/`, with `<name>.py` at its top
or under `src/` defining `apply(input)`, the seed's convention).

Workers run the trigger's code in the sandbox of `ratchet/sandbox.py`: another uid, no network unless the rules
allow it, writes only to the call's own folder `<root>/.calls/<id>/` (its HOME and TMPDIR, removed after the call).
What is deployed is made readable, never writable, by that uid. When the rules require isolation this machine cannot
give, the cluster refuses to start.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
from pipelines.steps.ratchet.sandbox import OFFLINE_REQUIRED, SandboxRules, hide_step_process, probe, worker_environment

WORKER = Path(__file__).with_name("local_worker.py")
_CALLS = ".calls"  # under the root: one folder per call, the worker's own
_STDERR_TAIL = 2000
log = logging.getLogger(__name__)


class LocalCluster:
    kind = "local"

    def __init__(self, root: Path, python: str = sys.executable, sandbox: SandboxRules = OFFLINE_REQUIRED) -> None:
        self.root = root
        self.isolation = probe(sandbox, python, WORKER)
        if self.isolation.missing and sandbox.required:
            raise ClusterConfigError(
                f"local destination: the sandbox is required, and this machine cannot give its workers "
                f"{'; nor '.join(self.isolation.missing)}. Run the step as root on a host that allows them, or "
                "send the algorithms to a destination that runs them elsewhere"
            )
        hide_step_process()
        level = logging.WARNING if self.isolation.missing else logging.INFO
        log.log(level, "local destination: workers run with %s", self.isolation.describe())

    @classmethod
    def from_options(cls, config: Mapping[str, Any], context: ClusterContext) -> LocalCluster:
        options = options_of(config, ("root",), "local")
        root = options.get("root") or str(Path(tempfile.gettempdir()) / "relay-ratchet" / context.workflow)
        if not isinstance(root, str):
            raise ClusterConfigError(f"destination.root: expected a folder path, found {root!r}")
        return cls(Path(root.removeprefix("file://")).resolve(), sandbox=context.sandbox)

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
            _readable(self.root)
        except OSError as exc:
            raise ClusterError(f"{algorithm}: cannot install into {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        tree = self.root / "algorithms" / name
        if not tree.is_dir():
            return CallResult(ok=False, error=f"{name}: not deployed in {self.root}")
        calls = self.root / _CALLS
        calls.mkdir(exist_ok=True)
        calls.chmod(0o711)  # workers pass through to their own folder, and see no other
        scratch = Path(tempfile.mkdtemp(dir=calls))
        try:
            if self.isolation.user is not None:
                os.chown(scratch, *self.isolation.user)
            return self._run(name, tree, scratch, payload, timeout)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(self, name: str, tree: Path, scratch: Path, payload: Any, timeout: float) -> CallResult:
        # The worker reaches the cluster through this descriptor, whatever the folders above the root allow (a 0700
        # temporary folder of the step's): /proc/self/fd/N is the root itself, for the worker as for the step.
        descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        root = f"/proc/self/fd/{descriptor}"
        home = f"{root}/{_CALLS}/{scratch.name}"
        request = {"input": payload, "confine": self.isolation.confinement(home, timeout)}
        started = time.monotonic()
        try:
            # Its own session: a kill at the timeout takes whatever the algorithm started with it.
            worker = subprocess.Popen(
                [*self.isolation.prefix, self.isolation.python, "-I", str(WORKER), root, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tree,
                env=worker_environment(home),
                start_new_session=True,
                pass_fds=(descriptor,),
            )
        finally:
            os.close(descriptor)
        try:
            out, err = worker.communicate(json.dumps(request).encode(), timeout=timeout)
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


def _readable(root: Path) -> None:
    """What is deployed, readable by a worker's uid whatever the umask; that uid never owns it, so never writes it."""
    for folder, subfolders, files in os.walk(root):
        if folder == str(root):
            subfolders[:] = [s for s in subfolders if s != _CALLS]
        os.chmod(folder, 0o755)
        for file in files:
            os.chmod(os.path.join(folder, file), 0o644)


def _inside(base: Path, relative: str) -> Path:
    """`base/relative`, refusing paths that would leave `base` (an archive's `../x`, an absolute name)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ClusterError(f"{relative!r}: expected a relative path inside the algorithm's tree")
    return base.joinpath(*parts)
