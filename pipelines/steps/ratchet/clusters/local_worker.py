"""One call of a local algorithm in its own process: `python -P local_worker.py ROOT NAME`, JSON in and out.

Standard library only, and run by path: it must work whatever the algorithm's environment holds. The request on
stdin is `{"input": ...}`; the reply on stdout is `{"ok", "output" | "error", "seconds"}`, where `seconds` is the
time `apply` took (as the seed's platform reported a call's duration: the worker's start-up is no part of it).

Algorithms call each other and read their data files through an `Algorithmia` module this worker provides, the
subset of the seed platform's client they use: `Algorithmia.client().algo("algo://local/name").pipe(x).result`
and `Algorithmia.client().file("data://local/collection/file").getString()` (also getBytes, getJson, exists,
getFile). Both resolve inside the local cluster folder ROOT; a nested call runs in this same process, so the
outer call's timeout bounds it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback
import types
from pathlib import Path
from typing import IO, Any


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


def main(argv: list[str]) -> int:
    root, name = Path(argv[1]), argv[2]
    reply_to = sys.stdout
    sys.stdout = sys.stderr  # an algorithm's prints must not corrupt the reply
    runtime = LocalRuntime(root)
    sys.modules["Algorithmia"] = runtime.module()
    started: float | None = None
    seconds: float | None = None
    try:
        request = json.load(sys.stdin)
        runtime.load(name)
        started = time.perf_counter()
        output = runtime.apply(name, request["input"])
        seconds = time.perf_counter() - started
        text = json.dumps({"ok": True, "output": output, "seconds": seconds})
    except Exception as exc:  # the algorithm's failure is the call's result, whatever it is
        if seconds is None and started is not None:
            seconds = time.perf_counter() - started
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=-3)}
        text = json.dumps({**reply, **({"seconds": seconds} if seconds is not None else {})})
    reply_to.write(text)
    reply_to.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
