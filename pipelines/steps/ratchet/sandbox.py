"""Isolation of the local cluster's workers: algorithm code named by a trigger runs as no one, offline, confined.

The threat is code that reads the step's secrets (its environment, its files, its memory) and sends them out, or
takes a cloud token from the metadata server (169.254.169.254). Each measure and why:

- another uid (`setpriv --reuid/--regid --clear-groups`, possible when the step runs as root): a process of
  another uid can neither read the step's `/proc/<pid>/environ` nor ptrace it, nor read its 0700 folders and
  0600 files; `--no-new-privs` so that no setuid program gives it back a privilege.
- a fresh network namespace (`unshare --net`, entered before the uid is dropped): its only interface is a loopback
  that is down, so nothing can be reached, the metadata server included. Left out when the rules allow network.
- Landlock (set up by the worker itself before it loads the algorithm, so the algorithm cannot undo it): writes
  are confined to the worker's own folder, where a uid alone still leaves /tmp and /dev/shm writable; and a confined
  process may not ptrace, so not read the `/proc/<pid>/environ` of, a process outside its confinement, whatever
  its uid.
- an empty environment: PATH, LANG and HOME/TMPDIR pointing at the worker's folder, nothing of the step's.
- rlimits (also set by the worker before the algorithm loads; an unprivileged process cannot raise them): address
  space, file size, processes, and CPU. A worker is warm (it serves one algorithm's calls until the step ends),
  so the step kills each call at its timeout, and the CPU limit is the ceiling of the worker's whole life (its first
  call's timeout and a second, plus `WORKER_CPU`), which bounds a worker that outlives a killed step. Before each
  call the worker lowers its soft limit to that call's timeout and a second above what it has used (SIGXCPU then),
  and the step replaces a worker whose ceiling cannot hold that much more.
- the step process made non-dumpable: keeps its `/proc/<pid>/environ` and ptrace closed to a worker of the *same*
  uid (the unsandboxed fallback) even without Landlock.

`probe` finds at run time which of these this machine gives, by running a worker's interpreter in them. What the
rules need and the machine lacks is `missing`; when the rules say `required`, the local cluster refuses to run.
Namespaces are often refused inside containers (seccomp), and a step not running as root has no other uid: on such
platforms prefer a destination that runs algorithms elsewhere.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER_USER = "nobody"
# Per worker. The process count is per uid, so it is set only when the worker has a uid of its own.
ADDRESS_SPACE = 4 * 1024**3
FILE_SIZE = 256 * 1024**2
PROCESSES = 128
# CPU seconds a warm worker may use beyond its first call's allowance, over its whole life. While the step runs, it
# kills each call at its timeout and replaces a worker whose ceiling cannot give a call its timeout and a second;
# so only a worker outliving a killed step can meet the ceiling, and it bounds that one.
WORKER_CPU = 600
_PROBE_TIMEOUT = 30.0
_PR_SET_DUMPABLE = 4
_LANDLOCK_CREATE_RULESET, _LANDLOCK_CREATE_RULESET_VERSION = 444, 1


@dataclass(frozen=True)
class SandboxRules:
    """What the deployment allows a worker (`network`) and whether running without full isolation is refused."""

    network: bool = False
    required: bool = True


OFFLINE_REQUIRED = SandboxRules()  # the default: no network, and no run at all without full isolation


@dataclass(frozen=True)
class Isolation:
    """What this machine gives a worker under some rules, and what the rules need that it lacks."""

    prefix: tuple[str, ...]  # the unshare/setpriv commands the worker's command runs under
    python: str  # an interpreter the worker's uid can run
    user: tuple[int, int] | None  # the worker's uid and gid, when they are not the step's
    landlock: int  # the kernel's Landlock ABI version, 0 when it has none
    missing: tuple[str, ...]

    def describe(self) -> str:
        """One line for the log: what a worker runs under."""
        kept = [f"uid {self.user[0]}" if self.user else "the step's uid"]
        kept += ["no network" if "--net" in self.prefix else "network"]
        kept += [f"Landlock ABI {self.landlock}"] if self.landlock else []
        return ", ".join(kept) + (f"; without {'; '.join(self.missing)}" if self.missing else "")

    def confinement(self, writable: str, cpu_seconds: int) -> dict[str, Any]:
        """What the worker applies to itself before it loads the algorithm (see local_worker.confine)."""
        limits = {"RLIMIT_AS": ADDRESS_SPACE, "RLIMIT_FSIZE": FILE_SIZE, "RLIMIT_CPU": cpu_seconds}
        if self.user is not None:
            limits["RLIMIT_NPROC"] = PROCESSES
        return {"limits": limits, "landlock": self.landlock, "writable": writable}


@functools.cache
def probe(rules: SandboxRules, python: str, worker: Path) -> Isolation:
    """What isolation a worker running `python worker` gets here; cached, as the machine does not change."""
    landlock, why = landlock_abi()
    missing = [] if landlock else [f"Landlock, to keep writes in the worker's folder ({why})"]
    switch = _switch_user(python, worker)
    if isinstance(switch, str):
        missing.append(f"another uid for the worker: {switch}")
        if not rules.network:
            missing.append("a network namespace: root enters it, then drops to the worker's uid")
        return Isolation((), python, None, landlock, tuple(missing))
    setpriv, interpreter, user = switch
    offline: list[str] = []
    if not rules.network:
        unshare = shutil.which("unshare")
        refused = _fails([unshare, "--net", "--", interpreter, "-I", "-c", ""]) if unshare else "no unshare command"
        if refused:
            missing.append(f"a network namespace (unshare --net: {refused})")
        else:
            offline = [str(unshare), "--net", "--"]
    return Isolation((*offline, *setpriv), interpreter, user, landlock, tuple(missing))


def call_cpu(timeout: float) -> int:
    """The CPU seconds a call gets: its timeout and a second, so that a call busy all along meets its timeout first."""
    return math.ceil(timeout) + 1


def landlock_abi() -> tuple[int, str]:
    """The kernel's Landlock ABI version; 0 and why when it has none (too old, not enabled, or filtered out)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = int(libc.syscall(_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION))
    return (version, "") if version > 0 else (0, os.strerror(ctypes.get_errno()))


def hide_step_process() -> None:
    """Make this process non-dumpable: its /proc/<pid>/environ and memory closed to other processes of its uid."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


def worker_environment(home: str) -> Mapping[str, str]:
    """All a worker inherits: enough to run Python and find its tools, never the step's own variables."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _switch_user(python: str, worker: Path) -> tuple[list[str], str, tuple[int, int]] | str:
    """The command that becomes WORKER_USER, and an interpreter that user can run; or why there is none."""
    if os.geteuid() != 0:
        return f"the step runs as uid {os.geteuid()}, not root, and has no other to give"
    setpriv = shutil.which("setpriv")
    try:
        entry = pwd.getpwnam(WORKER_USER)
    except KeyError:
        return f"no user {WORKER_USER}"
    if setpriv is None:
        return "no setpriv command"
    user = entry.pw_uid, entry.pw_gid
    command = [setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--no-new-privs", "--"]
    # The step's own interpreter may sit where that user cannot reach (pyenv under a 0700 /root): then the system's
    # of the same version, which runs the worker (standard library only) alike.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = dict.fromkeys((python, f"/usr/local/bin/{version}", f"/usr/bin/{version}"))
    # setpriv execs while it still holds root's capabilities, so that the interpreter starting proves little: it
    # must reach itself (as the algorithm's own subprocesses will) and the worker's file.
    check = "import os, sys; open(sys.argv[1]).close(); sys.exit(not os.access(sys.executable, os.X_OK))"
    for candidate in candidates:
        if not _fails([*command, candidate, "-I", "-c", check, str(worker)]):
            return command, candidate, user
    return f"uid {user[0]} can run none of {', '.join(candidates)} on {worker}"


def _fails(command: list[str]) -> str:
    """Why `command` failed (its stderr's last line, or its exit status), empty when it succeeded."""
    try:
        done = subprocess.run(command, capture_output=True, timeout=_PROBE_TIMEOUT, env=worker_environment("/"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return ""
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"
