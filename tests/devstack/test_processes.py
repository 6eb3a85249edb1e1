"""ManagedProcess and FunctionsServer: readiness errors say why, and stop() leaves no process behind."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from devstack.functions import FunctionsServer
from devstack.processes import ManagedProcess, ProcessError, ProcessSpec, free_port, group_members, tcp_probe

pytestmark = pytest.mark.integration


def never() -> bool:
    return False


def always() -> bool:
    return True


def test_exit_before_ready_reports_the_exit_code_and_log_tail(tmp_path: Path) -> None:
    spec = ProcessSpec(name="boom", argv=["sh", "-c", "echo starting; echo 'bad flag -x' >&2; exit 3"])
    with pytest.raises(ProcessError) as info, ManagedProcess(spec, log_dir=tmp_path, ready=never):
        pass
    message = str(info.value)
    assert "boom exited with code 3" in message
    assert "bad flag -x" in message
    assert str(tmp_path / "boom.log") in message


def test_timeout_reports_and_stops_the_process(tmp_path: Path) -> None:
    spec = ProcessSpec(name="slow", argv=["sh", "-c", "echo waiting; exec sleep 30"])
    process = ManagedProcess(spec, log_dir=tmp_path, ready=never, start_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"slow was not ready after 0\.3 s(.|\n)*waiting"):
        process.start()
    assert time.monotonic() - started < 5
    assert not process.running


def test_stop_reaches_grandchildren_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    # The shell and both sleeps ignore SIGTERM (an ignored signal stays ignored across fork and exec).
    spec = ProcessSpec(name="stubborn", argv=["sh", "-c", "trap '' TERM; sleep 30 & sleep 30 & wait"])
    process = ManagedProcess(spec, log_dir=tmp_path, ready=always, stop_timeout=0.3)
    with process:
        pgid = process.pid
        assert pgid is not None
        deadline = time.monotonic() + 5
        while len(group_members(pgid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(group_members(pgid)) == 3
    assert group_members(pgid) == []


def test_environment_is_laid_over_the_parent_and_output_is_logged(tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="env",
        argv=[
            sys.executable,
            "-c",
            "import os, time; print(os.environ['DEVSTACK_X'], 'PATH' in os.environ, flush=True); time.sleep(30)",
        ],
        env={"DEVSTACK_X": "hello"},
    )
    log = tmp_path / "env.log"
    process = ManagedProcess(spec, log_dir=tmp_path, ready=lambda: log.exists() and log.read_text().endswith("\n"))
    with process:
        pass
    assert process.log_tail() == "hello True"


def test_a_busy_port_is_refused_up_front(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert tcp_probe("127.0.0.1", port)()
        server = FunctionsServer("f", tmp_path / "main.py", port=port, workdir=tmp_path)
        with pytest.raises(ProcessError, match="already in use"):
            server.start()


def test_a_function_source_that_fails_to_import_shows_the_traceback(tmp_path: Path) -> None:
    source = tmp_path / "main.py"
    source.write_text("import functions_framework\nraise ImportError('no module named relay_missing')\n")
    with pytest.raises(ProcessError) as info, FunctionsServer("on_object_finalized", source, workdir=tmp_path):
        pass
    assert "function-on_object_finalized exited with code" in str(info.value)
    assert "no module named relay_missing" in str(info.value)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
