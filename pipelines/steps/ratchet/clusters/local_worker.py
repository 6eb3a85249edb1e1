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
os._exit, a crash). The step kills it, with its whole process group, at a call's timeout.

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
import sys
import time
import traceback
import types
from pathlib import Path
from typing import IO, Any

_PR_SET_NO_NEW_PRIVS = 38
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_RULE_PATH_BENEATH = 1
# Landlock's rights that write (LANDLOCK_ACCESS_FS_*): WRITE_FILE, then REMOVE_DIR to MAKE_SYM, REFER from ABI 2
# and TRUNCATE from ABI 3. Reading and executing are left to the uid's permissions.
_WRITE_FILE, _REFER, _TRUNCATE = 1 << 1, 1 << 13, 1 << 14
_WRITES = _WRITE_FILE | sum(1 << bit for bit in range(4, 13))


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # struct landlock_path_beneath_attr is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def confine(rules: dict[str, Any]) -> None:
    """Apply rlimits and Landlock to this process (and so to all it starts), before any algorithm code runs."""
    for name, value in rules["limits"].items():
        which = getattr(resource, name)
        _soft, hard = resource.getrlimit(which)
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)  # lowering is all it may do
        resource.setrlimit(which, (limit, limit))
    if rules["landlock"]:
        _write_only_under(rules["writable"], rules["landlock"])


def _write_only_under(folder: str, abi: int) -> None:
    """Landlock: no write anywhere but beneath `folder` (and to /dev/null), for this process and its children."""
    libc = ctypes.CDLL(None, use_errno=True)

    def checked(result: int, what: str) -> int:
        if result < 0:
            raise OSError(ctypes.get_errno(), f"Landlock: {what}: {os.strerror(ctypes.get_errno())}")
        return result

    writes = _WRITES | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    handled = ctypes.c_uint64(writes)  # struct landlock_ruleset_attr's first field; the kernel takes a prefix
    ruleset = checked(
        libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(handled), ctypes.sizeof(handled), 0), "ruleset"
    )
    try:
        for path, allowed in ((folder, writes), ("/dev/null", writes & (_WRITE_FILE | _TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneath(allowed, fd)
                checked(
                    libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0), path
                )
            finally:
                os.close(fd)
        # An unprivileged process may restrict itself only once it cannot gain privileges (setuid programs).
        checked(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        checked(libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0), "restrict_self")
    finally:
        os.close(ruleset)


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
