"""One functions-framework process serving one CloudEvent target on loopback."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

from devstack.processes import LOOPBACK, ManagedProcess, ProcessService, ProcessSpec, free_port, http_probe

__all__ = ["FunctionsServer", "functions_framework_command"]


def functions_framework_command(python: str | None = None) -> list[str]:
    """How to launch functions-framework with `python` (default: this interpreter)."""
    interpreter = python or sys.executable
    if python is None and importlib.util.find_spec("functions_framework.__main__") is None:
        # Older releases have no __main__; their console script sits next to the interpreter.
        return [str(Path(interpreter).parent / "functions-framework")]
    return [interpreter, "-m", "functions_framework"]


class FunctionsServer(ProcessService):
    """`functions-framework --target TARGET --source SOURCE --signature-type cloudevent` on loopback.

    One target per process, as in production where each function is its own service. `env` is laid over this
    process's environment.
    """

    def __init__(
        self,
        target: str,
        source: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        *,
        workdir: Path,
        host: str = LOOPBACK,
        signature_type: str = "cloudevent",
        python: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.source = Path(source).resolve()
        self.host = host
        self.port = port if port is not None else free_port(host)
        argv = [
            *functions_framework_command(python),
            "--target",
            target,
            "--source",
            str(self.source),
            "--signature-type",
            signature_type,
            "--host",
            host,
            "--port",
            str(self.port),
        ]
        # Unbuffered, so that print() and logging reach the log file before a crash or a stop.
        spec = ProcessSpec(
            name=f"function-{target}",
            argv=argv,
            env={"PYTHONUNBUFFERED": "1", **(env or {})},
            # Cloud Functions runs the code from its source directory (/workspace): relative paths agree.
            cwd=self.source.parent,
        )
        # Any HTTP answer (GET / on a CloudEvent function is a 405) means the gunicorn worker serves requests.
        self.process = ManagedProcess(
            spec,
            log_dir=workdir,
            ready=http_probe(host, self.port, "/"),
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
