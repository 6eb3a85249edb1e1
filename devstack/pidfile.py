"""The pid file of a running `make up`: one stack per working folder, and what `make down` stops."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

_POLL = 0.2
# A pid is checked against what it runs before it is signalled: after a reboot the number may be another program's.
_MARK = b"devstack.up"


class StackRunningError(Exception):
    """Another `make up` holds the working folder; the message is the one line to print."""


def running(pid_file: Path) -> int | None:
    """The pid of the `make up` the file names, if it still runs; None for no file, a stale one, or another program."""
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if _MARK in command.split(b"\0") else None


def claim(pid_file: Path) -> None:
    """Write this process's pid; StackRunningError when a live `make up` holds the file already."""
    holder = running(pid_file)
    if holder is not None and holder != os.getpid():
        raise StackRunningError(
            f"another `make up` (pid {holder}) uses {pid_file.parent}: `make down` stops it, or use it as it is"
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")


def release(pid_file: Path) -> None:
    """Remove the file if it is still this process's."""
    with contextlib.suppress(OSError):
        if running(pid_file) == os.getpid():
            pid_file.unlink()


def stop(pid_file: Path, timeout: float) -> int | None:
    """SIGTERM the `make up` the file names and wait until it has exited (it stops everything it started); returns
    its pid, or None when none was running. TimeoutError if it still runs after `timeout` seconds."""
    pid = running(pid_file)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(pid_file) == pid:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"`make up` (pid {pid}) still runs after {timeout:.0f} s")
        time.sleep(_POLL)
    return pid
