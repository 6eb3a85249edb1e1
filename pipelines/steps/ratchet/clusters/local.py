"""The embedded destination: algorithms are Python trees in a local folder, each served by a warm worker process.

Names here: `data://.my/<c>/<f>` becomes `data://local/<c>/<f>` (stored at `<root>/data/<c>/<f>`) and
`algo://.my/<name>` becomes `algo://local/<name>` (the tree `<root>/algorithms/<name>/`, with `<name>.py` at its top
or under `src/` defining `apply(input)`, the seed's convention).

Workers run the trigger's code in the sandbox of `ratchet/sandbox.py`: a uid of the run's own, a PID namespace of
the worker's own, no network unless the rules allow it, no unix sockets, reads only in the cluster's folder and the
interpreter's, writes only to the worker's own folder `<root>/.calls/<id>/` (its HOME and TMPDIR, removed with it).
What is deployed is made readable, never writable, by that uid. When the rules require isolation this machine cannot
give, the cluster refuses to start.

A call goes to its algorithm's warm worker, started at the algorithm's first call and fed the next ones over a pipe
(see local_worker.py), as the seed's platform kept an algorithm warm. At most one worker lives, the last one called:
a call to another algorithm, a redeploy or the end of the run stops it. What persists from one call to the next is
what the algorithm keeps in that process: its module globals (and those of the algorithms it called in-process),
files in its HOME, threads and children it left running. Every call runs under the same confinement, applied once
before the algorithm's code first ran and beyond its power to undo; no worker serves two algorithms, two runs or a
redeployed tree. A call still going at its timeout is killed with its worker's process group and PID namespace (all
the worker started, whatever session it moved to), as is a worker that ended or broke the protocol; the next call
starts a fresh one. Stopping a worker returns once the kernel has ended everything in its namespace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
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
from pipelines.steps.ratchet.sandbox import (
    OFFLINE_REQUIRED,
    WORKER_CPU,
    SandboxRules,
    call_cpu,
    hide_step_process,
    probe,
    run_user,
    worker_environment,
)

WORKER = Path(__file__).with_name("local_worker.py")
_CALLS = ".calls"  # under the root: one folder per worker, its own
_STDERR_TAIL = 2000
_STDERR_GRACE = 1.0  # seconds to collect the last words of a worker that ended
_LENGTH = 4  # bytes of a frame's length prefix (local_worker.py)
_CHUNK = 1 << 16
_MAX_REPLY = 256 * 1024 * 1024  # what the step holds of one reply, as of one exported file
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NAMESPACE_GRACE = 5.0  # seconds for the kernel to end what a worker's PID namespace held once its init is killed
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
        # One uid (and gid) for this run's workers, no other run's: no worker can signal or read another run's.
        self.user = run_user() if self.isolation.setpriv else None
        hide_step_process()
        level = logging.WARNING if self.isolation.missing else logging.INFO
        log.log(level, "local destination: workers run with %s", self.isolation.describe())
        # At most one worker lives, the one last called: the ratchet calls each algorithm once, in order, then its
        # entrypoint over and over, so this costs no warm call, and a run's memory and processes stay one worker's.
        self._held: list[_Worker] = []
        self._lock = threading.Lock()
        # The worker ends with the cluster even when no one closes it (a test, an interpreter that exits).
        weakref.finalize(self, _stop_all, self._held)

    @classmethod
    def from_options(cls, config: Mapping[str, Any], context: ClusterContext) -> LocalCluster:
        options = options_of(config, ("root",), "local")
        # By default inside this run's own folder: two runs of one workflow at once must not install over each other.
        root = options.get("root") or str(context.workdir / "cluster" / context.workflow)
        if not isinstance(root, str):
            raise ClusterConfigError(f"destination.root: expected a folder path, found {root!r}")
        return cls(Path(root.removeprefix("file://")).resolve(), sandbox=context.sandbox)

    def data_name(self, collection: str, path: str) -> str:
        return f"data://local/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return f"algo://local/{name}"

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        # The worker may hold this algorithm's older code (its own, or loaded for an in-process call): it is done.
        self.close()
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
        request = json.dumps({"input": payload, "timeout": timeout}).encode()
        with self._lock:  # one call at a time: a pipe carries one exchange at a time
            started = time.monotonic()
            try:
                reply = self._worker_for(name, tree, timeout).exchange(request, started + timeout)
            except _NoReply as exc:
                elapsed = time.monotonic() - started
                worker = self._stop()
                if exc.timed_out:
                    error = f"timed out after {timeout:g} s: the worker was killed"
                    return CallResult(ok=False, error=error, seconds=elapsed, timed_out=True)
                return CallResult(ok=False, error=f"{name}: {worker.failure(exc) if worker else exc}")
            except BaseException:  # interrupted (the task's time limit, ^C): no worker goes on unwatched
                self._stop()
                raise
            if reply.get("ended"):
                self._stop()  # it said why it could not load, and ends: the next call starts afresh
        return _result(reply, time.monotonic() - started)

    def close(self) -> None:
        """Stop the worker (and whatever it started): the run is over."""
        with self._lock:
            self._stop()

    def _worker_for(self, name: str, tree: Path, timeout: float) -> _Worker:
        """The algorithm's warm worker if it can take this call, else a fresh one in place of whichever there was."""
        if self._held and self._held[0].name == name and self._held[0].can_take(timeout):
            return self._held[0]
        self._stop()
        calls = self.root / _CALLS
        calls.mkdir(exist_ok=True)
        calls.chmod(0o711)  # workers pass through to their own folder, and see no other
        scratch = Path(tempfile.mkdtemp(dir=calls))
        if self.user is not None:
            os.chown(scratch, *self.user)
        # The worker reaches the cluster through this descriptor, whatever the folders above the root allow (a 0700
        # temporary folder of the step's): /proc/self/fd/N is the root itself, for the worker as for the step.
        descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        root = f"/proc/self/fd/{descriptor}"
        home = f"{root}/{_CALLS}/{scratch.name}"
        ceiling = call_cpu(timeout) + WORKER_CPU  # this call's allowance, then WORKER_CPU for the later ones
        try:
            # Its own session: a kill takes whatever the algorithm started with it.
            process = subprocess.Popen(
                [*self.isolation.command(self.user), self.isolation.python, "-I", str(WORKER), root, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tree,
                env=worker_environment(home),
                start_new_session=True,
                pass_fds=(descriptor,),
            )
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(descriptor)
        worker = _Worker(name, process, scratch, ceiling, nested="--pid" in self.isolation.namespaces)
        self._held.append(worker)
        confinement = self.isolation.confinement(root, home, ceiling, self.user is not None)
        worker.queue(json.dumps({"confine": confinement}).encode())
        return worker

    def _stop(self) -> _Worker | None:
        """Stop the worker there is, if any; the stopped worker (to say how it ended)."""
        if not self._held:
            return None
        worker = self._held.pop()
        worker.stop()
        return worker


class _NoReply(Exception):
    """The worker gave no reply: `timed_out`, `ended`, or it broke the protocol (the message says how)."""

    def __init__(self, message: str, *, timed_out: bool = False, ended: bool = False) -> None:
        super().__init__(message)
        self.timed_out, self.ended = timed_out, ended


class _Worker:
    """One algorithm's worker process: frames out through its stdin, replies in through its stdout.

    All three pipes are read and written without blocking, under one poll with the call's deadline, so no worker
    (a hung one, one that never reads, one that floods stderr) can hold a call past its timeout.
    """

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], scratch: Path, cpu_ceiling: int, *, nested: bool
    ) -> None:
        assert process.stdin and process.stdout and process.stderr
        self.name, self.process, self.scratch, self.cpu_ceiling = name, process, scratch, cpu_ceiling
        # In a PID namespace of its own, `process` is `unshare`, whose child is the namespace's init, whose first
        # child serves the calls; without one, `process` serves them.
        self.nested = nested
        self._serving: int | None = None if nested else process.pid
        self._to, self._from, self._errors = process.stdin.fileno(), process.stdout.fileno(), process.stderr.fileno()
        for fd in (self._to, self._from, self._errors):
            os.set_blocking(fd, False)
        self._pending = bytearray()  # frames written as the worker reads them
        self._stderr = b""  # the end of what the worker wrote to stderr during this call

    def queue(self, message: bytes) -> None:
        self._pending += len(message).to_bytes(_LENGTH, "big") + message

    def can_take(self, timeout: float) -> bool:
        """Alive, and its CPU ceiling can still give this call its allowance (else a fresh worker does)."""
        serving = self._serving_pid()
        used = _cpu_seconds(serving) if serving is not None else None
        return used is not None and used + call_cpu(timeout) <= self.cpu_ceiling

    def exchange(self, request: bytes, deadline: float) -> dict[str, Any]:
        """Send a call and wait for its reply until `deadline` (time.monotonic)."""
        self.queue(request)
        self._stderr = b""
        self._read_available(self._errors)  # what an earlier call left on stderr is not this call's
        reply = bytearray()
        poller = select.poll()
        poller.register(self._to, select.POLLOUT)
        poller.register(self._from, select.POLLIN)
        poller.register(self._errors, select.POLLIN)
        while True:
            if len(reply) >= _LENGTH:
                size = int.from_bytes(reply[:_LENGTH], "big")
                if size > _MAX_REPLY:
                    raise _NoReply(f"the worker's reply is {size} bytes, more than the {_MAX_REPLY} allowed")
                if len(reply) == _LENGTH + size:
                    return _decoded(bytes(reply[_LENGTH:]))
                if len(reply) > _LENGTH + size:
                    raise _NoReply("the worker wrote more than its reply")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _NoReply("timed out", timed_out=True)
            for fd, events in poller.poll(math.ceil(left * 1000)):
                if fd == self._to:
                    if events & (select.POLLERR | select.POLLHUP) or not self._write():
                        poller.unregister(fd)  # all sent, or the worker is gone: its stdout's end will say
                elif fd == self._from:
                    if not self._read_into(reply):  # at most a chunk past a frame's announced size
                        raise _NoReply("ended", ended=True)
                elif not self._read_available(fd):
                    poller.unregister(fd)

    def failure(self, reason: _NoReply) -> str:
        """The call's error, once the worker is stopped: how it ended, and the end of its stderr."""
        if not reason.ended:
            return f"{reason}: the worker was killed"
        code = self.process.returncode
        how = f"exited {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
        tail = self._stderr.decode(errors="replace").strip()
        return f"the worker {how} without a reply{': ' + tail if tail else ''}"

    def stop(self) -> None:
        """Kill its process group and its namespace's init, wait until the namespace is empty, reap it, and remove
        its folder; idempotent."""
        if self.process.returncode is None:
            inits = [handle for pid in _children(self.process.pid) if (handle := _pidfd(pid)) is not None]
            with contextlib.suppress(ProcessLookupError):  # it may have ended and taken its group with it
                os.killpg(self.process.pid, signal.SIGKILL)
            for handle in inits:  # in the group too, unless the algorithm moved it: an init cannot leave it
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(handle, signal.SIGKILL)
            self.process.wait()
            # An init's end comes after the kernel has ended all else in its namespace: then nothing is left.
            for handle in inits:
                ended = select.poll()
                ended.register(handle, select.POLLIN)
                ended.poll(_NAMESPACE_GRACE * 1000)
                os.close(handle)
            # What it wrote before it died: the group is gone, so stderr ends unless something escaped the group.
            end = time.monotonic() + _STDERR_GRACE
            while time.monotonic() < end and self._read_available(self._errors, wait=end - time.monotonic()):
                pass
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _serving_pid(self) -> int | None:
        """The pid (here) of the process serving the calls; None when it cannot be found (it ended)."""
        if self._serving is None:
            for init in _children(self.process.pid):
                self._serving = next((pid for pid in _children(init) if _namespace_pid(pid) == 2), None)
        return self._serving

    def _write(self) -> bool:
        """Write what the pipe takes now; False once nothing is left to write or the worker is gone."""
        try:
            written = os.write(self._to, self._pending)
        except BlockingIOError:
            return True
        except OSError:  # EPIPE: the worker closed its stdin or ended
            self._pending.clear()
            return False
        del self._pending[:written]
        return bool(self._pending)

    def _read_into(self, buffer: bytearray) -> bool:
        """Append what the worker's stdout has now; False at its end."""
        try:
            data = os.read(self._from, _CHUNK)
        except BlockingIOError:
            return True
        buffer += data
        return bool(data)

    def _read_available(self, fd: int, wait: float = 0.0) -> bool:
        """Keep the end of what stderr has now (after up to `wait` seconds); False at its end."""
        if wait > 0 and not select.select([fd], [], [], wait)[0]:
            return False
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # closed already
            return False
        self._stderr = (self._stderr + data)[-_STDERR_TAIL:]
        return bool(data)


def _decoded(frame: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(frame)
    except ValueError as exc:
        raise _NoReply(f"the worker's reply is not JSON ({exc})") from None
    if not isinstance(reply, dict):
        raise _NoReply("the worker's reply is not a JSON object")
    return reply


def _result(reply: Mapping[str, Any], elapsed: float) -> CallResult:
    if not reply.get("ok"):
        # apply's own time when it ran (as for a success); the whole call's when it failed before, e.g. to load.
        return CallResult(ok=False, error=str(reply.get("error")), seconds=float(reply.get("seconds", elapsed)))
    return CallResult(ok=True, output=reply.get("output"), seconds=float(reply["seconds"]))


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time the process has used, read from /proc (not its own word); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # ended, not yet reaped
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime and stime, fields 14 and 15 of stat(5)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _namespace_pid(pid: int) -> int | None:
    """The process' pid in its own PID namespace (the last of NSpid in /proc/<pid>/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return None


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # ended meanwhile
        return None


def _stop_all(workers: list[_Worker]) -> None:
    while workers:
        workers.pop().stop()


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
