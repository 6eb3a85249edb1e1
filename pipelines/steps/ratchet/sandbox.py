"""Isolation of the local cluster's workers: algorithm code named by a trigger runs as no one, offline, confined.

The threat is code that reads the step's secrets (its environment, its files, its memory) or another tenant's files
and sends them out, takes a cloud token from the metadata server (169.254.169.254), reaches a host service, or
outlives its step to disturb a later run. Each measure and why:

- a uid and gid of its own per run (`setpriv --reuid/--regid --clear-groups`, possible when the step runs as root),
  picked at random in `RUN_UIDS` and checked unused here (no passwd or group entry, no process holding it): a
  process of another uid can neither read the step's `/proc/<pid>/environ` nor ptrace it, nor read its 0700 folders
  and 0600 files, nor signal another run's worker; `--no-new-privs` so that no setuid program gives back a privilege.
- a PID namespace of its own (`unshare --pid --fork --mount-proc`): the worker serves from the namespace's second
  process under a small init (local_worker.py), and when either ends, or the step ends (`--pdeathsig`), the kernel
  kills everything in the namespace, children that left the session (`setsid`) or double-forked included.
- a fresh network namespace (`unshare --net`, entered before the uid is dropped): its only interface is a loopback
  that is down, so nothing can be reached, the metadata server included. Left out when the rules allow network.
- Landlock (set up by the worker itself before it loads the algorithm, so the algorithm cannot undo it): reads only
  in the cluster's folder, the interpreter's own folders and `SYSTEM_READS`; writes only in the worker's own folder
  (a uid alone leaves world-readable files readable, /tmp and /dev/shm writable); from ABI 6 no signal and no
  abstract unix socket leaves its domain; and a confined process may not ptrace a process outside it.
- a seccomp filter (also the worker's own): `socket(AF_UNIX)`, a non-stream `socketpair(AF_UNIX)` and io_uring
  fail with EPERM, as a network namespace does not cover pathname unix sockets (a host service's `/run/*.sock`).
- an empty environment: PATH, LANG and HOME/TMPDIR pointing at the worker's folder, nothing of the step's.
- rlimits (also set by the worker before the algorithm loads; an unprivileged process cannot raise them): address
  space, file size, processes, and CPU. A worker is warm (it serves one algorithm's calls until the step ends),
  so the step kills each call at its timeout, and the CPU limit is the ceiling of the worker's whole life (its first
  call's timeout and a second, plus `WORKER_CPU`). Before each call the worker lowers its soft limit to that call's
  timeout and a second above what it has used (SIGXCPU then), and the step replaces a worker whose ceiling cannot
  hold that much more.
- the step process made non-dumpable: keeps its `/proc/<pid>/environ` and ptrace closed to a worker of the *same*
  uid (the unsandboxed fallback) even without Landlock.

`probe` finds at run time which of these this machine gives, by starting a worker under all of them and letting it
try (`local_worker.py --probe`). What the rules need and the machine lacks is `missing`; when the rules say
`required`, the local cluster refuses to run. `Isolation.record` is what the run's report says of it.
Namespaces are often refused inside containers (seccomp), and a step not running as root has no other uid: on such
platforms prefer a destination that runs algorithms elsewhere.
"""

from __future__ import annotations

import ctypes
import functools
import grp
import json
import math
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Each run's workers get a uid (and the gid of the same number) from here: systemd's allocation (UIDS-GIDS.md)
# leaves 1879048192-2147352575 to no one (above the container ranges, below the foreign range and 2^31).
RUN_UIDS = range(0x7000_0000, 0x7000_0000 + (1 << 24))
# Per worker. The process count is per uid, so it is set only when the worker has a uid of its own.
ADDRESS_SPACE = 4 * 1024**3
FILE_SIZE = 256 * 1024**2
PROCESSES = 128
# CPU seconds a warm worker may use beyond its first call's allowance, over its whole life. While the step runs, it
# kills each call at its timeout and replaces a worker whose ceiling cannot give a call its timeout and a second;
# so only a worker outliving a killed step can meet the ceiling, and it bounds that one.
WORKER_CPU = 600
# What a worker may read besides the cluster's folder and its interpreter's: libraries and tools its code and
# subprocesses load, the clock, random devices, CPU counts, its own /proc entry. Never /etc as a whole, /home,
# /tmp, /srv or /var, where other tenants' files and Relay's policy live.
SYSTEM_READS = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/bin", "/usr/bin", "/usr/local/bin",
    "/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom", "/dev/random", "/dev/zero",
    "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu",
)  # fmt: skip
NETWORK_READS = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/usr/share/ca-certificates")
_PROBE_TIMEOUT = 30.0
_PR_SET_DUMPABLE = 4
_LANDLOCK_CREATE_RULESET, _LANDLOCK_CREATE_RULESET_VERSION = 444, 1
_PID_NAMESPACE = ("--pid", "--fork", "--kill-child", "--mount-proc")


@dataclass(frozen=True)
class SandboxRules:
    """What the deployment allows a worker (`network`) and whether running without full isolation is refused."""

    network: bool = False
    required: bool = True


OFFLINE_REQUIRED = SandboxRules()  # the default: no network, and no run at all without full isolation


@dataclass(frozen=True)
class Isolation:
    """What this machine gives a worker under some rules, and what the rules need that it lacks."""

    rules: SandboxRules
    python: str  # an interpreter a run's uid can run
    setpriv: str | None  # set when the step can give each run a uid of its own
    namespaces: tuple[str, ...]  # the `unshare` command and the namespaces it enters, empty without any
    landlock: int  # the kernel's Landlock ABI version, 0 when it has none
    tiers: Mapping[str, bool]  # each measure, whether a probing worker had it (see record)
    missing: tuple[str, ...]

    def command(self, user: tuple[int, int] | None) -> list[str]:
        """What the worker's interpreter runs under: namespaces first (root enters them), then the run's uid."""
        if user is None or self.setpriv is None:
            return list(self.namespaces)
        # --pdeathsig after the uid changes (which clears it): the worker's init dies with `unshare`, and so its
        # namespace; the outer one makes `unshare` die with the step's thread that started it.
        dies = [self.setpriv, "--pdeathsig", "KILL", "--"] if "--pid" in self.namespaces else []
        switch = [self.setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--no-new-privs"]
        return [*dies, *self.namespaces, *switch, *(["--pdeathsig", "KILL"] if dies else []), "--"]

    def describe(self) -> str:
        """One line for the log: what a worker runs under."""
        kept = ["a uid of its own" if self.setpriv else "the step's uid"]
        kept += ["no network" if "--net" in self.namespaces else "network"]
        kept += ["a PID namespace"] if "--pid" in self.namespaces else []
        kept += [f"Landlock ABI {self.landlock}"] if self.landlock else []
        kept += ["no unix sockets"] if self.tiers.get("unix_sockets_blocked") else []
        return ", ".join(kept) + (f"; without {'; '.join(self.missing)}" if self.missing else "")

    def confinement(self, root: str, writable: str, cpu_seconds: int, own_uid: bool) -> dict[str, Any]:
        """What the worker applies to itself before it loads the algorithm (see local_worker.confine): each wall
        the probe found holding here, so that a worker never fails on one this machine cannot give."""
        limits = {"RLIMIT_AS": ADDRESS_SPACE, "RLIMIT_FSIZE": FILE_SIZE, "RLIMIT_CPU": cpu_seconds}
        if own_uid:
            limits["RLIMIT_NPROC"] = PROCESSES
        landlock = self.tiers.get("landlock_reads", False) and self.tiers.get("landlock_writes", False)
        return {
            "limits": limits,
            "landlock": self.landlock if landlock else 0,
            "read": [root, *SYSTEM_READS, *(NETWORK_READS if self.rules.network else ())],
            "write": [writable, "/dev/null"],
            "block_unix_sockets": self.tiers.get("unix_sockets_blocked", False),
        }

    def record(self) -> dict[str, Any]:
        """What the run's report says of its sandbox: each measure, whether it holds, and what is missing."""
        return {
            **self.tiers,
            "landlock_abi": self.landlock,
            "network_allowed": self.rules.network,
            "required": self.rules.required,
            "missing": list(self.missing),
        }


@functools.cache
def probe(rules: SandboxRules, python: str, worker: Path) -> Isolation:
    """What isolation a worker running `python worker` gets here; cached, as the machine does not change."""
    missing: list[str] = []
    landlock, why = landlock_abi()
    if not landlock:
        missing.append(f"Landlock, to keep reads and writes in the worker's folders ({why})")
    switch = _switch_user(python, worker)
    setpriv, interpreter, user = (None, python, None) if isinstance(switch, str) else switch
    namespaces: list[str] = []
    if isinstance(switch, str):
        missing.append(f"a uid of its own per run: {switch}")
        missing.append("a PID namespace: root enters it, then drops to the worker's uid")
        if not rules.network:
            missing.append("a network namespace: root enters it, then drops to the worker's uid")
    else:
        unshare = shutil.which("unshare")
        wanted: list[tuple[str, tuple[str, ...]]] = [
            ("a PID namespace, so that all a worker starts ends with it", _PID_NAMESPACE)
        ]
        wanted += [] if rules.network else [("a network namespace", ("--net",))]
        for what, flags in wanted:
            refused = _fails([unshare, *flags, "--", interpreter, "-I", "-c", ""]) if unshare else "no unshare command"
            if refused:
                missing.append(f"{what} (unshare {' '.join(flags[:1])}: {refused})")
            else:
                namespaces += flags
        namespaces = [str(unshare), *namespaces, "--"] if namespaces else []
    everything = dict.fromkeys(("landlock_reads", "landlock_writes", "unix_sockets_blocked"), True)
    partial = Isolation(rules, interpreter, setpriv, tuple(namespaces), landlock, everything, ())
    tiers, failures = _try_worker(partial, user, worker)
    missing += [f for f in failures if f not in missing]
    return Isolation(rules, interpreter, setpriv, tuple(namespaces), landlock, tiers, tuple(missing))


def run_user() -> tuple[int, int]:
    """A uid and gid for one run's workers: random in RUN_UIDS, named by no one and held by no process here."""
    held = _ids_in_use()
    for _ in range(64):
        candidate = RUN_UIDS[secrets.randbelow(len(RUN_UIDS))]
        if candidate not in held and not _named(candidate):
            return candidate, candidate
    raise OSError(f"no unused uid found in {RUN_UIDS.start}..{RUN_UIDS.stop - 1} after 64 tries")


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


def _switch_user(python: str, worker: Path) -> tuple[str, str, tuple[int, int]] | str:
    """setpriv, an interpreter a run's uid can run, and the uid it was tried with; or why there is none."""
    if os.geteuid() != 0:
        return f"the step runs as uid {os.geteuid()}, not root, and has no other to give"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "no setpriv command"
    user = run_user()
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
            return setpriv, candidate, user
    return f"uid {user[0]} can run none of {', '.join(candidates)} on {worker}"


def _try_worker(isolation: Isolation, user: tuple[int, int] | None, worker: Path) -> tuple[dict[str, bool], list[str]]:
    """Start a worker as the cluster would, let it confine itself and try each wall: which held, and what failed."""
    folder = Path(tempfile.mkdtemp(prefix="relay-sandbox-probe-"))
    try:
        folder.chmod(0o1777)  # writable by anyone, as /tmp: only Landlock keeps a worker's writes out
        workspace, home = folder / "workspace", folder / "workspace" / "home"
        home.mkdir(parents=True)
        (workspace / "inside.txt").write_text("in")
        (folder / "outside.txt").write_text("out")
        for path in (workspace, workspace / "inside.txt", folder / "outside.txt"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if user is not None:
            os.chown(home, *user)
        request = {
            "confine": isolation.confinement(str(workspace), str(home), 60, user is not None),
            "inside": str(workspace / "inside.txt"),
            "outside": str(folder / "outside.txt"),
        }
        command = [*isolation.command(user), isolation.python, "-I", str(worker), "--probe"]
        frame = json.dumps(request).encode()
        try:
            done = subprocess.run(
                command,
                input=len(frame).to_bytes(4, "big") + frame,
                capture_output=True,
                timeout=_PROBE_TIMEOUT,
                env=worker_environment(str(home)),
                cwd=workspace,
            )
            seen = json.loads(done.stdout[4:]) if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            done, seen = None, {"failures": [f"a probing worker: {exc}"]}
        if seen is None:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] if done else []
            seen = {"failures": [f"a probing worker (exit status {done and done.returncode}: {' '.join(tail)})"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _judge(isolation, user, seen)


def _judge(
    isolation: Isolation, user: tuple[int, int] | None, seen: Mapping[str, Any]
) -> tuple[dict[str, bool], list[str]]:
    """Each tier from what the probing worker saw (`local_worker.probe`), and a line for each that did not hold."""
    own = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("pid", "net")}
    limits = isolation.confinement("", "", 60, user is not None)["limits"]
    tiers = {
        "uid_switch": user is not None and seen.get("ids") == [user[0], user[1], []],
        "pid_namespace": "pid_ns" in seen and seen["pid_ns"] != own["pid"],
        "network_namespace": "net_ns" in seen and seen["net_ns"] != own["net"],
        "landlock_reads": seen.get("reads") == ["done", "refused"],
        "landlock_writes": seen.get("writes") == ["done", "refused"],
        "unix_sockets_blocked": seen.get("unix") == ["refused", "done"],
        "rlimits": _within(seen.get("limits"), limits),
        "no_new_privs": seen.get("no_new_privs") is True,
    }
    wanted = {
        "landlock_reads": "Landlock read rules (reads outside the worker's folders)",
        "landlock_writes": "Landlock write rules (writes outside the worker's folder)",
        "unix_sockets_blocked": "a seccomp filter refusing unix sockets",
        "rlimits": "rlimits",
        "no_new_privs": "no_new_privs",
    }
    failures = [str(f) for f in seen.get("failures", [])]
    for key, what in wanted.items():  # without Landlock at all, its tiers are missing already, and said why
        if not tiers[key] and (isolation.landlock or not key.startswith("landlock")):
            failures.append(f"{what}: a probing worker found it did not hold")
    return tiers, failures


def _within(seen: object, limits: Mapping[str, int]) -> bool:
    """Every limit set, at most as asked (a step already under a lower hard limit passes that on)."""
    if not isinstance(seen, dict) or set(seen) != set(limits):
        return False
    return all(isinstance(seen[name], int) and 0 <= seen[name] <= value for name, value in limits.items())


def _ids_in_use() -> set[int]:
    """Every uid and gid a process here runs as (real, effective, saved, filesystem)."""
    held: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                for line in status:
                    if line.startswith(("Uid:", "Gid:")):
                        held.update(int(field) for field in line.split()[1:])
        except OSError:
            continue  # ended meanwhile
    return held


def _named(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False


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
