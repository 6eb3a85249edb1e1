"""Child processes that start in their own process group, log to a file, wait until ready and stop cleanly."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from devstack.lifecycle import Lifecycle

__all__ = [
    "ManagedProcess",
    "Probe",
    "ProcessError",
    "ProcessService",
    "ProcessSpec",
    "free_port",
    "group_members",
    "http_probe",
    "stop_all",
    "tcp_probe",
]

LOOPBACK = "127.0.0.1"

# A readiness probe answers "is the service up yet?" without raising.
Probe = Callable[[], bool]

_POLL_INTERVAL = 0.02
_KILL_WAIT = 10.0  # after SIGKILL: only a process stuck in the kernel (a hung disk or mount) takes this long
_LOG_TAIL_LINES = 40


class ProcessError(RuntimeError):
    """A managed process exited early or did not become ready in time."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a port that was free on `host` a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_probe(host: str, port: int, timeout: float = 0.2) -> Probe:
    """A probe that succeeds once something accepts TCP connections on host:port."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return probe


def http_probe(
    host: str, port: int, path: str = "/", *, ok: Callable[[int], bool] | None = None, timeout: float = 0.5
) -> Probe:
    """A probe that succeeds once GET path answers with a status `ok` accepts (any status by default).

    http.client, not urllib or requests: those honour http_proxy from the environment, which must never see
    loopback traffic.
    """

    def probe() -> bool:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return ok is None or ok(status)

    return probe


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: `env` is laid over the parent's environment unless `inherit_env` is false."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    inherit_env: bool = True

    def full_env(self) -> dict[str, str]:
        base = dict(os.environ) if self.inherit_env else {}
        base.update(self.env)
        return base


class ManagedProcess(Lifecycle):
    """Run a `ProcessSpec` in its own process group; `with` starts it, waits for `ready`, and stops the group.

    `launch()` and `wait_ready()` are separate so that several slow processes can start concurrently.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        log_dir: Path,
        ready: Probe,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.spec = spec
        self.log_path = Path(log_dir) / f"{spec.name}.log"
        self._ready = ready
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0
        self._stop_deadline: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def launch(self) -> Self:
        """Start the process without waiting for it to become ready."""
        if self._proc is not None:
            raise ProcessError(f"{self.spec.name} is already running (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # The child keeps its own copy of the log descriptor; ours can close right away.
            try:
                self._proc = subprocess.Popen(
                    list(self.spec.argv),
                    env=self.spec.full_env(),
                    cwd=self.spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session (and so process group): stop() can then reach grandchildren such as the JVM
                    # that gcloud or a shell wrapper leaves behind, and Ctrl-C in a terminal does not hit it twice.
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"{self.spec.name}: cannot run {self.spec.argv[0]!r}: {exc}") from exc
        self._launched_at = time.monotonic()
        return self

    def wait_ready(self) -> Self:
        """Poll the readiness probe until it succeeds; stop the group and raise if it exits or times out."""
        proc = self._require_proc()
        try:
            outcome = _poll_until_ready(
                self._ready, deadline=self._launched_at + self._start_timeout, alive=lambda: proc.poll() is None
            )
        except BaseException:
            # Ctrl-C or a failing probe while waiting: `with` would not reach __exit__, so clean up here.
            self.stop()
            raise
        if outcome == "ready":
            return self
        code = proc.returncode
        self.stop()
        if outcome == "exited":
            problem = f"exited with code {code} before it was ready"
        else:
            problem = f"was not ready after {self._start_timeout:.1f} s"
        raise ProcessError(f"{self.spec.name} {problem}\n{self._describe()}")

    def start(self) -> Self:
        return self.launch().wait_ready()

    def terminate(self) -> None:
        """Send SIGTERM to the group without waiting: lets several processes shut down concurrently."""
        if self._proc is not None and self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._stop_timeout
            # With start_new_session the group id is the leader's pid; it stays valid while any member lives.
            signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left. Safe to call twice."""
        self.terminate()
        proc, deadline = self._proc, self._stop_deadline
        if proc is None or deadline is None:
            return
        self._proc = self._stop_deadline = None
        pgid = proc.pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        # The leader may be gone while its children (gunicorn workers, a JVM under a wrapper) still run.
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
        if proc.poll() is None or _group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
        proc.wait()
        # Reaping the leader says nothing of the rest: a member dies of SIGKILL only once the kernel runs it (a
        # busy CPU, or a read in progress, delays that), and until then it is alive in the group. Wait it out, so
        # that stop() returning means nothing is left; SIGKILL cannot be ignored, so this ends.
        killed_by = time.monotonic() + _KILL_WAIT
        while _group_alive(pgid) and time.monotonic() < killed_by:
            time.sleep(_POLL_INTERVAL)

    # -- introspection ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ProcessError(f"{self.spec.name} has not been launched")
        return self._proc

    def _describe(self) -> str:
        tail = self.log_tail() or "(empty)"
        return f"command: {' '.join(self.spec.argv)}\nlog: {self.log_path}\n--- last lines ---\n{tail}"


class ProcessService(Lifecycle):
    """Lifecycle for a service on host:port backed by one `ManagedProcess` (subclasses set the attributes)."""

    process: ManagedProcess
    host: str
    port: int

    def launch(self) -> Self:
        # A readiness probe cannot tell our server from another one already on the port: refuse up front.
        if tcp_probe(self.host, self.port)():
            raise ProcessError(f"{self.process.spec.name}: {self.host}:{self.port} is already in use")
        self.process.launch()
        return self

    def wait_ready(self) -> Self:
        self.process.wait_ready()
        return self

    def start(self) -> Self:
        return self.launch().wait_ready()

    def stop(self) -> None:
        self.process.stop()


def stop_all(processes: Sequence[ManagedProcess]) -> None:
    """Stop several processes concurrently: SIGTERM them all in the given order, then wait for each."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


def _poll_until_ready(
    probe: Probe, *, deadline: float, alive: Callable[[], bool]
) -> Literal["ready", "exited", "timeout"]:
    while True:
        if not alive():
            return "exited"
        if probe():
            return "ready"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(_POLL_INTERVAL)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`, read from /proc.

    A plain killpg(pgid, 0) is not enough: orphans re-parented to a PID 1 that never reaps (common in
    containers) stay zombies forever and would count as alive.
    """
    members: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
