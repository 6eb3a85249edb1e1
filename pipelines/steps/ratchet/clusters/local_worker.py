"""A local algorithm's warm worker: `python -I local_worker.py ROOT NAME`, fed its calls over a pipe, one at a time.

Standard library only, and run by path: it must work whatever the algorithm's environment holds.

Frames, both ways on stdin and stdout: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The first
frame in is `{"confine": {...}}` (see ratchet/sandbox.py): the worker applies it before any of the algorithm's code
runs, so every call this worker serves runs under it and the algorithm can never undo it. Each further frame in is
a call `{"input": ..., "timeout": seconds}`, answered by one frame `{"ok", "output" | "error", "seconds"}`, where
`seconds` is the time `apply` took (as the seed's platform reported a call's duration: neither the worker's
start-up nor the pipe is part of it).

The worker is warm, as an algorithm was on the seed's platform: the algorithm is loaded once, at its first call,
and what it keeps (module globals, a model read once, files in its HOME) is there at its next call in this worker.
The worker ends when its stdin closes (the step is done, or gone), after saying why the algorithm could not be
loaded (the next call gets a fresh worker, which tries again), or when the algorithm ends the process (sys.exit,
os._exit, a crash). The step kills it, with its whole process group, at a call's timeout. In a PID namespace of its
own, its first process stays the namespace's init (`become_init`) and the worker serves from its child: when the
worker ends, so does the init, and the kernel ends all else in the namespace.

`local_worker.py --probe` is the sandbox's probe (ratchet/sandbox.py): one frame in, the confinement to apply and
files to try, one frame out, what it found.

Algorithms call each other and read their data files through an `Algorithmia` module this worker provides, the
subset of the seed platform's client they use: `Algorithmia.client().algo("algo://local/name").pipe(x).result`
and `Algorithmia.client().file("data://local/collection/file").getString()` (also getBytes, getJson, exists,
getFile). Both resolve inside the local cluster folder ROOT; a nested call runs in this same process, so the
outer call's timeout bounds it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import resource
import signal
import socket as pysocket
import stat
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 4, 38, 22, 2
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_RULE_PATH_BENEATH = 1
# Landlock's rights (LANDLOCK_ACCESS_FS_*): EXECUTE, WRITE_FILE, READ_FILE, READ_DIR, then REMOVE_DIR to MAKE_SYM,
# REFER from ABI 2 and TRUNCATE from ABI 3. A rule on a file (not a folder) may hold only the first three and
# TRUNCATE. From ABI 6, scopes: no abstract unix socket and no signal reaches outside the worker's domain.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR, _REFER, _TRUNCATE = 1, 1 << 1, 1 << 2, 1 << 3, 1 << 13, 1 << 14
_READS = _EXECUTE | _READ_FILE | _READ_DIR
_WRITES = _WRITE_FILE | sum(1 << bit for bit in range(4, 13))
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE
_SCOPES = 1 | 2  # LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL
# seccomp: per architecture its AUDIT_ARCH and the numbers of socket, socketpair and io_uring_setup (io_uring can
# open and connect sockets without either call).
_ARCHES = {"x86_64": (0xC000003E, 41, 53, 425), "aarch64": (0xC00000B7, 198, 199, 425)}
_AF_UNIX, _SOCK_STREAM, _SOCK_TYPE_MASK, _X32_BIT = 1, 1, 0xF, 0x40000000
_ALLOW, _EPERM = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
_LD, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, ALU|AND|K, RET|K


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # struct landlock_path_beneath_attr is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def confine(rules: dict[str, Any], strict: bool = True) -> list[str]:
    """Apply rlimits, no_new_privs, Landlock and seccomp to this process (and so to all it starts), before any
    algorithm code runs. Raises on the first that fails; with `strict` false (a probe), goes on and says which."""
    failures: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    stages: list[tuple[str, Callable[[], object]]] = [("rlimits", lambda: _limit(rules["limits"]))]
    # An unprivileged process may restrict itself only once it cannot gain privileges (setuid programs).
    stages += [("no_new_privs", lambda: _checked(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs"))]
    if rules["landlock"]:
        stages += [("Landlock", lambda: _landlock(libc, rules))]
    if rules["block_unix_sockets"]:
        stages += [("seccomp", lambda: _refuse_unix_sockets(libc))]
    for name, stage in stages:
        try:
            stage()
        except (OSError, ValueError) as exc:
            if strict:
                raise
            failures.append(f"{name}: {exc}")
    return failures


def _checked(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


def _limit(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = getattr(resource, name)
        _soft, hard = resource.getrlimit(which)
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)  # lowering is all it may do
        resource.setrlimit(which, (limit, limit))


def _landlock(libc: ctypes.CDLL, rules: dict[str, Any]) -> None:
    """Reads only beneath `read` (and this interpreter's own folders), writes only beneath `write`."""
    abi = int(rules["landlock"])
    writes = _WRITES | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(_READS | writes, 0, _SCOPES if abi >= 6 else 0)
    ruleset = _checked(libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0), "ruleset")
    # The interpreter's own library folders, not its script's (this file's folder is Relay's code).
    interpreter = [os.path.dirname(os.path.realpath(sys.executable))]
    interpreter += [p for p in sys.path if p and p != os.path.dirname(os.path.abspath(__file__))]
    grants = [(path, _READS) for path in [*rules["read"], *interpreter]]
    grants += [(path, _READS | writes) for path in rules["write"]]
    try:
        for path, allowed in grants:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # not on this machine (/lib64, a zip in sys.path): nothing to grant
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= _FILE_RIGHTS
                rule = _PathBeneath(allowed, fd)
                _checked(libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
                         path)  # fmt: skip
            finally:
                os.close(fd)
        _checked(libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0), "restrict_self")
    finally:
        os.close(ruleset)


def _refuse_unix_sockets(libc: ctypes.CDLL) -> None:
    """seccomp: socket(AF_UNIX), socketpair(AF_UNIX) but a connected stream pair, and io_uring fail with EPERM.

    A network namespace leaves pathname unix sockets reachable (a host service's /run/x.sock), and an abstract
    one when network is allowed. A stream socketpair stays allowed (asyncio's and multiprocessing's pipes): it is
    born connected, so it can connect nowhere else (EISCONN); a datagram pair could.
    """
    machine = os.uname().machine
    if machine not in _ARCHES:
        raise OSError(f"no seccomp filter for this machine's architecture ({machine})")
    arch, socket, socketpair, io_uring = _ARCHES[machine]
    # (code, k, jump if true, jump if false), jumps by label; seccomp_data: nr at 0, arch at 4, args from 16 (the
    # low 32 bits of each on a little-endian machine, all the kernel reads of an int).
    program: list[Any] = [
        (_LD, 4), (_JEQ, arch, None, "deny"),  # another ABI (i386 on x86_64): nothing legitimate uses it here
        (_LD, 0), (_JGE, _X32_BIT, "deny", None),
        (_JEQ, io_uring, "deny", None), (_JEQ, socket, "socket", None), (_JEQ, socketpair, "pair", "allow"),
        "socket", (_LD, 16), (_JEQ, _AF_UNIX, "deny", "allow"),
        "pair", (_LD, 16), (_JEQ, _AF_UNIX, None, "allow"),
        (_LD, 24), (_AND, _SOCK_TYPE_MASK), (_JEQ, _SOCK_STREAM, "allow", "deny"),
        "allow", (_RET, _ALLOW),
        "deny", (_RET, _EPERM),
    ]  # fmt: skip
    labels, at = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = at
        else:
            at += 1
    code = [item for item in program if not isinstance(item, str)]
    filters = (_SockFilter * len(code))()
    for index, (op, k, *jumps) in enumerate(code):
        offsets = [0 if j is None else labels[j] - index - 1 for j in (jumps or [None, None])]
        filters[index] = _SockFilter(op, offsets[0], offsets[1], k)
    fprog = _SockFprog(len(code), filters)
    _checked(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """What a worker finds when it confines itself and tries each wall (the step's sandbox.probe judges it)."""

    def attempt(action: Callable[[], object]) -> str:
        try:
            action()
        except PermissionError:
            return "refused"
        except OSError as exc:
            return f"failed: {exc}"
        return "done"

    def write(path: str) -> None:
        with open(path, "w") as file:
            file.write("x")

    seen: dict[str, Any] = {kind + "_ns": os.readlink(f"/proc/self/ns/{kind}") for kind in ("pid", "net")}
    seen["ids"] = [os.getuid(), os.getgid(), os.getgroups()]
    seen["failures"] = confine(request["confine"], strict=False)
    home, inside, outside = request["confine"]["write"][0], request["inside"], request["outside"]
    seen["reads"] = [attempt(lambda: open(inside).close()), attempt(lambda: open(outside).close())]
    seen["writes"] = [attempt(lambda: write(os.path.join(home, "x"))), attempt(lambda: write(outside + ".new"))]
    seen["unix"] = [attempt(lambda: pysocket.socket(pysocket.AF_UNIX).close()), attempt(_socketpair)]
    seen["limits"] = {name: resource.getrlimit(getattr(resource, name))[0] for name in request["confine"]["limits"]}
    with open("/proc/self/status") as status:
        seen["no_new_privs"] = any(line.split() == ["NoNewPrivs:", "1"] for line in status)
    return seen


def _socketpair() -> None:
    for end in pysocket.socketpair():
        end.close()


def become_init() -> None:
    """In a PID namespace of its own, the worker's first process stays its init and serves from a child.

    The kernel kills everything in the namespace when its init ends, and this init ends when the worker does, so
    nothing the algorithm started (a `setsid` child, a double fork) outlives its worker. The worker is not the
    init itself because an init does not get the signals it has no handler for (SIGXCPU at its soft limit).
    """
    if os.getpid() != 1:
        return  # no namespace of its own (the sandbox's fallback): the worker serves as it is
    child = os.fork()
    if child == 0:
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an init ignores what it does not handle
    # Not dumpable: a process of the same uid (the algorithm, where Landlock is missing) cannot ptrace it.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.closerange(3, 1 << 20)  # the calls' pipes and the cluster's folder are the worker's, not this init's
    for fd in (0, 1):
        os.close(fd)
    while True:
        pid, status = os.wait()  # and reap whatever else the namespace leaves to its init
        if pid == child:
            if os.WIFSIGNALED(status):  # an init cannot end by a signal of its own: its exit status says which
                name = signal.Signals(os.WTERMSIG(status)).name
                os.write(2, f"the worker was killed by {name}\n".encode())
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status))


class LocalRuntime:
    """Loads algorithms from ROOT/algorithms/<name>/ and data files from ROOT/data/<collection>/<path>."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._modules: dict[str, types.ModuleType] = {}

    def load(self, name: str) -> types.ModuleType:
        if name in self._modules:
            return self._modules[name]
        tree = self.root / "algorithms" / name
        for candidate in (tree / f"{name}.py", tree / "src" / f"{name}.py"):
            if candidate.is_file():
                break
        else:
            raise LookupError(f"no algorithm {name!r} in {self.root}: expected algorithms/{name}/{name}.py")
        # Its own folder first, so that the algorithm's sibling modules import as they would on the platform.
        sys.path.insert(0, str(candidate.parent))
        spec = importlib.util.spec_from_file_location(f"ratchet_algorithm_{name}", candidate)
        if spec is None or spec.loader is None:
            raise LookupError(f"cannot load {candidate}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "apply", None)):
            raise LookupError(f"{candidate} defines no apply(input)")
        self._modules[name] = module
        return module

    def apply(self, name: str, value: Any) -> Any:
        return self.load(name).apply(value)

    def data_path(self, uri: str) -> Path:
        rest = uri.removeprefix("data://")
        _owner, _, path = rest.partition("/")
        parts = [p for p in path.split("/") if p]
        if not uri.startswith("data://") or len(parts) < 2 or any(p in (".", "..") for p in parts):
            raise ValueError(f"expected data://<owner>/<collection>/<file>, found {uri!r}")
        return self.root.joinpath("data", *parts)

    def algorithm_name(self, uri: str) -> str:
        # algo://owner/name[/version], or owner/name[/version] as the seed's client also took.
        segments = uri.removeprefix("algo://").split("/")
        if len(segments) < 2 or not segments[1]:
            raise ValueError(f"expected algo://<owner>/<name>[/<version>], found {uri!r}")
        return segments[1]

    def module(self) -> types.ModuleType:
        """The `Algorithmia` module algorithms import."""
        runtime = self
        module = types.ModuleType("Algorithmia")

        class Response:
            def __init__(self, result: Any, seconds: float) -> None:
                self.result = result
                self.metadata = types.SimpleNamespace(duration=seconds, content_type="json")

        class Algo:
            def __init__(self, uri: str) -> None:
                self.name = runtime.algorithm_name(uri)

            def set_options(self, **_options: Any) -> Algo:
                return self  # the outer call's timeout bounds every nested call

            def pipe(self, value: Any) -> Response:
                started = time.perf_counter()
                result = runtime.apply(self.name, value)
                return Response(result, time.perf_counter() - started)

        class File:
            def __init__(self, uri: str) -> None:
                self.path = runtime.data_path(uri)

            def exists(self) -> bool:
                return self.path.is_file()

            # The seed client's method names.
            def getBytes(self) -> bytes:
                return self.path.read_bytes()

            def getString(self) -> str:
                return self.path.read_text()

            def getJson(self) -> Any:
                return json.loads(self.path.read_text())

            def getFile(self) -> IO[bytes]:
                return self.path.open("rb")

        class Client:
            def algo(self, uri: str) -> Algo:
                return Algo(uri)

            def file(self, uri: str) -> File:
                return File(uri)

        def client(*_args: Any, **_kwargs: Any) -> Client:
            return Client()

        module.__dict__.update(client=client, Client=Client)
        return module


_LENGTH = 4  # bytes of a frame's length prefix


def read_frame(fd: int) -> Any:
    """The next frame's JSON value; None when the pipe closed before a frame began."""
    head = _read_exactly(fd, _LENGTH)
    if head is None:
        return None
    body = _read_exactly(fd, int.from_bytes(head, "big"))
    if body is None:
        raise EOFError("the pipe closed in the middle of a frame")
    return json.loads(body)


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(_LENGTH, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def allow_cpu(timeout: float) -> None:
    """This call's CPU: its timeout and a second on top of what the worker used so far, as the soft limit.

    The hard limit, the ceiling of the worker's whole life, was set by `confine` and cannot be raised; the step
    kills the call at its timeout whatever the CPU, so this soft limit matters only to a call that outlives the
    step (SIGXCPU ends it).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime) + math.ceil(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def serve(runtime: LocalRuntime, name: str, request: dict[str, Any]) -> tuple[bytes, bool]:
    """One call's reply frame, and whether the worker may serve another."""
    started: float | None = None
    seconds: float | None = None
    loaded = False
    try:
        allow_cpu(float(request["timeout"]))
        runtime.load(name)
        loaded = True
        started = time.perf_counter()
        output = runtime.apply(name, request["input"])
        seconds = time.perf_counter() - started
        return json.dumps({"ok": True, "output": output, "seconds": seconds}).encode(), True
    except Exception as exc:  # the algorithm's failure is the call's result, whatever it is
        if seconds is None and started is not None:
            seconds = time.perf_counter() - started
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=-3)}
        reply |= {"seconds": seconds} if seconds is not None else {}
        # An algorithm that failed to load may have half-run its module: this worker ends, the next call starts
        # a fresh one, which tries again.
        return json.dumps(reply | ({} if loaded else {"ended": True})).encode(), loaded


def main(argv: list[str]) -> int:
    become_init()
    if argv[1:] == ["--probe"]:
        write_frame(1, json.dumps(probe(read_frame(0))).encode())
        return 0
    root, name = Path(argv[1]), argv[2]
    # The frames get descriptors of their own, out of the algorithm's reach by accident: its prints and its
    # children's output go to stderr, and what reads stdin finds it empty, so nothing it does corrupts a frame.
    calls, replies = os.dup(0), os.dup(1)  # not inherited by the algorithm's subprocesses (O_CLOEXEC)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(2, 1)
    os.close(nothing)
    sys.stdout = sys.stderr
    runtime = LocalRuntime(root)
    sys.modules["Algorithmia"] = runtime.module()
    confine(read_frame(calls)["confine"])
    while (request := read_frame(calls)) is not None:
        reply, again = serve(runtime, name, request)
        write_frame(replies, reply)
        if not again:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
