"""The local cluster's sandbox, as a hostile algorithm meets it: the step runs in a subprocess holding a secret."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.ratchet.clusters.local import WORKER
from pipelines.steps.ratchet.sandbox import ADDRESS_SPACE, FILE_SIZE, PROCESSES, SandboxRules, probe
from tests.pipelines.ratchet.support import REPO

# The step's dependencies, for a step run by another interpreter (as an unprivileged user, below).
PACKAGES = sysconfig.get_paths()["purelib"]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the worker's own uid needs a step running as root")

# The step: deploys the spy and calls it once, printing its pid and the call's result.
STEP = """
import dataclasses, json, os, sys
from pathlib import Path
from pipelines.steps.ratchet.clusters import ClusterConfigError, ExportedFile
from pipelines.steps.ratchet.clusters.local import LocalCluster
from pipelines.steps.ratchet.sandbox import SandboxRules

root, spy = Path(sys.argv[1]), Path(sys.argv[4])
rules, payload = SandboxRules(**json.loads(sys.argv[2])), json.loads(sys.argv[3])
try:
    cluster = LocalCluster(root, sandbox=rules)
except ClusterConfigError as exc:
    print(json.dumps({"refused": str(exc)}))
    sys.exit()
cluster.deploy("spy", [ExportedFile("code", "spy.py", spy.read_bytes()), ExportedFile("data", "d.txt", b"d", "c")])
result = cluster.call("spy", payload, timeout=20)
again = cluster.call("spy", payload, timeout=20)  # the same warm worker: still as confined
print(json.dumps({"pid": os.getpid(), "result": dataclasses.asdict(result), "again": dataclasses.asdict(again)}))
"""

# The algorithm: tries what a red team's would, and reports what it got.
SPY = """
import os, pathlib, resource, socket

def attempt(action):
    try:
        return ["done", action()]
    except Exception as exc:
        return ["refused", type(exc).__name__]

def write(path):
    pathlib.Path(path).write_text("x")
    return path

def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        return connection.recv(16).decode()

def apply(input):
    parent = f"/proc/{os.getppid()}"
    return {
        "uid": os.getuid(),
        "ppid": os.getppid(),
        "environ": dict(os.environ),
        "parent_environ": attempt(lambda: pathlib.Path(parent, "environ").read_bytes().decode(errors="replace")),
        "parent_memory": attempt(lambda: open(f"{parent}/mem", "rb").close()),
        "reads": {path: attempt(lambda p=path: pathlib.Path(p).read_text()) for path in input["secrets"]},
        "writes": {path: attempt(lambda p=path: write(p)) for path in input["outside"]},
        "home": attempt(lambda: write(os.path.join(os.environ["HOME"], "scratch.txt"))),
        "connect": attempt(lambda: connect(input["port"])),
        "limits": {name: resource.getrlimit(getattr(resource, name))[0]
                   for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC")},
    }
"""


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server on this machine's loopback that greets whoever connects; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with connection:
                connection.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept, which close alone does not
    listener.close()
    thread.join(5)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder any uid may enter (unlike pytest's 0700 ones): what is hidden in it, its modes must hide."""
    folder = Path(tempfile.mkdtemp(prefix="relay-sandbox-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def run_step(
    folder: Path, rules: SandboxRules, payload: dict[str, Any], env: dict[str, str], prefix: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """Run the step (`prefix`: its interpreter) with `env`, the cluster in `folder`; its output and what it printed."""
    spy = folder / "spy.py"
    spy.write_text(textwrap.dedent(SPY))
    spy.chmod(0o644)
    arguments = [str(folder / "cluster"), json.dumps(rules.__dict__), json.dumps(payload), str(spy)]
    done = subprocess.run(
        [*prefix, "-c", STEP, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{REPO / 'functions'}:{PACKAGES}", **env},
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr, json.loads(done.stdout)


@as_root
@pytest.mark.parametrize("network", [False, True])
def test_a_hostile_algorithm_reaches_no_secret_and_no_network_unless_allowed(
    tmp_path: Path, shared: Path, server: int, network: bool
):
    canary = f"canary-{uuid.uuid4().hex}"
    locked = shared / "secret.txt"  # a root file of mode 0600 in a folder anyone may enter
    locked.write_text(canary)
    locked.chmod(0o600)
    private = tmp_path / "workdir-secret.txt"  # readable itself, in the step's own 0700 folder
    private.write_text(canary)
    private.chmod(0o644)
    outside = [
        str(tmp_path / "cluster" / "algorithms" / "spy" / "new.py"),
        str(tmp_path / "cluster" / "data" / "c" / "d.txt"),
    ]
    outside += [
        str(shared / "dropped.txt"),
        f"/tmp/relay-sandbox-{uuid.uuid4().hex}",
        f"/dev/shm/relay-{uuid.uuid4().hex}",
    ]
    payload = {"secrets": [str(locked), str(private)], "outside": outside, "port": server}
    shared.chmod(0o777)  # writable by anyone: only Landlock keeps the worker out

    env = {"RELAY_SECRET_CANARY": canary}
    output, step = run_step(tmp_path, SandboxRules(network=network), payload, env, (sys.executable,))

    assert canary not in output
    assert step["result"]["ok"], step["result"]["error"]
    seen = step["result"]["output"]
    assert step["again"]["output"] == seen  # a warm worker's second call meets the same walls
    assert seen["ppid"] == step["pid"]  # the process whose environment it tried is the step's
    assert seen["uid"] == pwd.getpwnam("nobody").pw_uid
    assert set(seen["environ"]) == {"PATH", "LANG", "HOME", "TMPDIR"}
    assert seen["parent_environ"] == ["refused", "PermissionError"]
    assert seen["parent_memory"] == ["refused", "PermissionError"]
    assert seen["reads"] == {path: ["refused", "PermissionError"] for path in payload["secrets"]}
    assert seen["writes"] == {path: ["refused", "PermissionError"] for path in outside}
    assert seen["home"][0] == "done"  # its own folder it may write
    assert seen["connect"] == (["done", "hello"] if network else ["refused", "OSError"])
    assert seen["limits"] == {
        "RLIMIT_AS": ADDRESS_SPACE,
        "RLIMIT_CPU": 21,  # the 20 s timeout and a second
        "RLIMIT_FSIZE": FILE_SIZE,
        "RLIMIT_NPROC": PROCESSES,
    }
    assert not (tmp_path / "cluster" / ".calls").exists() or not any((tmp_path / "cluster" / ".calls").iterdir())


@as_root
def test_as_root_this_machine_gives_every_tier():
    isolation = probe(SandboxRules(), sys.executable, WORKER)
    assert isolation.missing == ()
    assert isolation.user == (pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    assert "--net" in isolation.prefix and isolation.landlock > 0
    assert "--net" not in probe(SandboxRules(network=True), sys.executable, WORKER).prefix


@pytest.fixture
def as_nobody(shared: Path) -> tuple[str, ...]:
    """How to run the step as an unprivileged user (one that can reach this repository), whose folder `shared` is."""
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.geteuid() != 0 or not Path(python).exists() or not shutil.which("setpriv"):
        pytest.skip(f"playing an unprivileged step needs root, setpriv and {python}")
    nobody = pwd.getpwnam("nobody")
    os.chown(shared, nobody.pw_uid, nobody.pw_gid)
    return ("setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", python)


def test_a_step_that_is_not_root_refuses_to_run_algorithms_when_the_sandbox_is_required(
    shared: Path, as_nobody: tuple[str, ...]
):
    _, step = run_step(shared, SandboxRules(), {}, {}, as_nobody)
    assert "not root, and has no other to give" in step["refused"]
    assert "a network namespace" in step["refused"]
    assert not (shared / "cluster").exists()


def test_unsandboxed_on_request_the_worker_still_cannot_read_the_steps_environment(
    shared: Path, as_nobody: tuple[str, ...], server: int
):
    canary = f"canary-{uuid.uuid4().hex}"
    payload = {"secrets": [], "outside": [], "port": server}
    output, step = run_step(shared, SandboxRules(required=False), payload, {"RELAY_SECRET_CANARY": canary}, as_nobody)
    assert canary not in output
    assert "workers run with the step's uid, network" in output  # the log line says what is missing
    seen = step["result"]["output"]
    assert seen["ppid"] == step["pid"] and seen["uid"] == pwd.getpwnam("nobody").pw_uid  # the step's own uid
    assert seen["parent_environ"] == ["refused", "PermissionError"]  # Landlock, and the step is not dumpable
    assert seen["connect"] == ["done", "hello"]  # nothing stops it: what `required` is for
    assert set(seen["environ"]) == {"PATH", "LANG", "HOME", "TMPDIR"}


READ_PARENT = "import os; print(len(open(f'/proc/{os.getppid()}/environ', 'rb').read()))"


@pytest.mark.parametrize("hidden", [False, True])
def test_a_hidden_step_process_keeps_its_environment_from_children_of_its_own_uid(
    as_nobody: tuple[str, ...], hidden: bool
):
    step = f"""
import subprocess, sys
from pipelines.steps.ratchet.sandbox import hide_step_process
{"hide_step_process()" if hidden else ""}
sys.exit(subprocess.run([sys.executable, "-c", {READ_PARENT!r}], capture_output=True).returncode)
"""
    done = subprocess.run([*as_nobody, "-c", step], env={"PYTHONPATH": str(REPO)}, capture_output=True, timeout=30)
    assert done.returncode == (1 if hidden else 0), done.stderr
