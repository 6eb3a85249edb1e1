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

from pipelines.steps.ratchet.clusters import ClusterContext, ExportedFile
from pipelines.steps.ratchet.clusters.local import WORKER, LocalCluster
from pipelines.steps.ratchet.sandbox import ADDRESS_SPACE, FILE_SIZE, PROCESSES, RUN_UIDS, SandboxRules, probe
from tests.pipelines.ratchet.support import REPO, run_example_step
from tests.pipelines.ratchet.test_local_cluster import eventually_gone, wait_for_process

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
rules, payload = SandboxRules(**json.loads(sys.argv[2])), json.loads(sys.argv[3]) | {"step": os.getpid()}
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

def connect_unix(address):
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(5)
        connection.connect(address.replace("@", "\\0", 1) if address.startswith("@") else address)
        return connection.recv(16).decode()

def apply(input):
    parent = f"/proc/{input['step']}"  # the step's pid, as the step knows it
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
        "unix": {address: attempt(lambda a=address: connect_unix(a)) for address in input.get("unix", [])},
        "own_data": attempt(lambda: pathlib.Path(os.environ["HOME"], "..", "..", "data", "c", "d.txt").read_text()),
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
    assert seen["uid"] in RUN_UIDS
    assert set(seen["environ"]) == {"PATH", "LANG", "HOME", "TMPDIR"}
    # In its own PID namespace the step's pid names no process at all; its parent is the namespace's init.
    assert seen["ppid"] == 1
    assert seen["parent_environ"] == ["refused", "FileNotFoundError"]
    assert seen["parent_memory"] == ["refused", "FileNotFoundError"]
    assert seen["reads"] == {path: ["refused", "PermissionError"] for path in payload["secrets"]}
    assert seen["writes"] == {path: ["refused", "PermissionError"] for path in outside}
    assert seen["home"][0] == "done"  # its own folder it may write
    assert seen["own_data"] == ["done", "d"]  # and its cluster's files it may read
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
    assert isolation.missing == () and isolation.setpriv is not None and all(isolation.tiers.values())
    assert {"--net", "--pid"} <= set(isolation.namespaces) and isolation.landlock > 0
    assert "--net" not in probe(SandboxRules(network=True), sys.executable, WORKER).namespaces


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


# What an algorithm leaves running: a child in a session of its own, and a double-forked orphan, named by `input`;
# an `input` ending in "hang" then keeps the call going.
LEAVER = """
import os, subprocess, sys, time

def apply(input):
    subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(120)  # {input}-setsid"],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", f"import time; time.sleep(120)  # {input}-orphan"])
        os._exit(0)
    os.waitpid(child, 0)
    if input.endswith("hang"):
        time.sleep(120)
    return os.getuid()
"""

# An algorithm that tries to kill the process `input` names, as a leftover of an earlier run did.
KILLER = """
import os, signal

def apply(input):
    try:
        os.kill(input, signal.SIGKILL)
        outcome = "done"
    except OSError as exc:
        outcome = type(exc).__name__
    return {"kill": outcome, "uid": os.getuid()}
"""


def local_cluster(root: Path) -> LocalCluster:
    return LocalCluster.from_options({"kind": "local", "root": str(root)}, ClusterContext(root.parent, "w"))


def alive(pid: int) -> bool:
    """The process runs (it is neither gone nor a zombie), now."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@as_root
def test_what_an_algorithm_leaves_running_ends_with_its_cluster(tmp_path: Path):
    cluster = local_cluster(tmp_path / "cluster")
    token = f"leftover-{uuid.uuid4().hex}"
    cluster.deploy("leaver", [ExportedFile("code", "leaver.py", LEAVER.encode())])
    assert cluster.call("leaver", token, timeout=20).ok
    left = wait_for_process(f"{token}-setsid") + wait_for_process(f"{token}-orphan")
    assert len(left) == 2 and all(alive(pid) for pid in left)  # the call returned; they run on, warm state
    cluster.close()
    assert not any(alive(pid) for pid in left)  # gone when close returns, as when the step ends


# A step that starts the leaver's call and is killed in the middle of it (its task's time limit, a node going away).
DYING_STEP = """
import sys
from pathlib import Path
from pipelines.steps.ratchet.clusters import ExportedFile
from pipelines.steps.ratchet.clusters.local import LocalCluster

cluster = LocalCluster(Path(sys.argv[1]))
cluster.deploy("leaver", [ExportedFile("code", "leaver.py", sys.argv[3].encode())])
cluster.call("leaver", sys.argv[2], timeout=300)
"""


@as_root
def test_what_an_algorithm_leaves_running_ends_with_a_step_that_is_killed(tmp_path: Path):
    token = f"leftover-{uuid.uuid4().hex}-hang"
    arguments = [str(tmp_path / "cluster"), token, LEAVER]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{REPO / 'functions'}:{PACKAGES}"}
    step = subprocess.Popen([sys.executable, "-c", DYING_STEP, *arguments], env=env, cwd="/")
    try:
        left = wait_for_process(f"{token}-setsid", timeout=30) + wait_for_process(f"{token}-orphan", timeout=30)
        assert len(left) == 2 and all(alive(pid) for pid in left)
    finally:
        step.kill()
        step.wait()
    assert all(eventually_gone(pid) for pid in left)


@as_root
def test_a_run_cannot_signal_another_runs_worker(tmp_path: Path):
    victim, attacker = local_cluster(tmp_path / "imaging"), local_cluster(tmp_path / "assay")
    token = f"victim-{uuid.uuid4().hex}"
    try:
        victim.deploy("leaver", [ExportedFile("code", "leaver.py", LEAVER.encode())])
        victim_uid = victim.call("leaver", token, timeout=20).output
        pid = wait_for_process(f"{token}-setsid")[0]
        attacker.deploy("killer", [ExportedFile("code", "killer.py", KILLER.encode())])
        tried = attacker.call("killer", pid, timeout=20).output
        assert tried["kill"] != "done" and alive(pid)
        assert {victim_uid, tried["uid"]} <= set(RUN_UIDS) and victim_uid != tried["uid"]
        # Even where it could name the process (a pid it saw in its own namespace), its uid may not signal it.
        as_attacker = ["setpriv", f"--reuid={tried['uid']}", f"--regid={tried['uid']}", "--clear-groups"]
        kill = "import os, sys; os.kill(int(sys.argv[1]), 9)"
        done = subprocess.run([*as_attacker, sys.executable, "-c", kill, str(pid)], capture_output=True, text=True)
        assert done.returncode != 0 and "PermissionError" in done.stderr and alive(pid)
    finally:
        victim.close()
        attacker.close()


@as_root
def test_an_algorithm_reads_no_world_readable_file_outside_its_folders(tmp_path: Path, shared: Path):
    other_tenant = shared / "imaging-results.csv"  # another tenant's file, readable by everyone on the host
    policy = shared / "policy.yaml"  # Relay's policy, as the step reads it from RELAY_POLICY_URI
    for path in (other_tenant, policy):
        path.write_text("tenants: []\n")
        path.chmod(0o644)
    readable = [str(other_tenant), str(policy), str(REPO / "devstack" / "policy.yaml")]
    _, step = run_step(tmp_path, SandboxRules(), {"secrets": readable, "outside": [], "port": 1}, {}, (sys.executable,))
    seen = step["result"]["output"]
    assert seen["reads"] == {path: ["refused", "PermissionError"] for path in readable}
    assert seen["own_data"] == ["done", "d"]


@pytest.fixture
def unix_servers(shared: Path) -> Iterator[list[str]]:
    """A host service on a pathname unix socket any uid may open, and one on an abstract socket: their addresses."""
    path = shared / "service.sock"
    abstract = f"relay-test-{uuid.uuid4().hex}"
    listeners = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)]
    listeners[0].bind(str(path))
    path.chmod(0o777)
    listeners[1].bind("\0" + abstract)

    def serve(listener: socket.socket) -> None:
        listener.listen()
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"hello")

    threads = [threading.Thread(target=serve, args=(listener,), daemon=True) for listener in listeners]
    for thread in threads:
        thread.start()
    yield [str(path), "@" + abstract]
    for listener in listeners:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    for thread in threads:
        thread.join(5)


@as_root
@pytest.mark.parametrize("network", [False, True])
def test_an_algorithm_reaches_no_unix_socket_service(tmp_path: Path, unix_servers: list[str], network: bool):
    with socket.socket(socket.AF_UNIX) as check:  # the services answer whoever may connect
        check.connect(unix_servers[0])
        assert check.recv(16) == b"hello"
    payload = {"secrets": [], "outside": [], "port": 1, "unix": unix_servers}
    _, step = run_step(tmp_path, SandboxRules(network=network), payload, {}, (sys.executable,))
    assert step["result"]["ok"], step["result"]["error"]  # the worker's own pipe to the step still works
    assert step["result"]["output"]["unix"] == {address: ["refused", "PermissionError"] for address in unix_servers}


@as_root
def test_the_run_records_what_sandbox_its_algorithms_ran_in(tmp_path: Path):
    done, result_file = run_example_step(tmp_path, "lab--sandbox", timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(result_file.read_text())
    assert result["status"] == 200, result["message"]
    sandbox = result["outputs"]["sandbox"]
    tiers = ("uid_switch", "pid_namespace", "network_namespace", "landlock_reads", "landlock_writes")
    tiers += ("unix_sockets_blocked", "rlimits", "no_new_privs")
    assert all(sandbox[tier] is True for tier in tiers) and sandbox["landlock_abi"] >= 1
    assert (sandbox["missing"], sandbox["required"], sandbox["network_allowed"]) == ([], True, False)
    report = json.loads(Path(result["outputs"]["report_json"]).read_text())
    assert report["sandbox"] == sandbox


# `unshare` as a container's seccomp profile leaves it: new network namespaces allowed, PID namespaces refused.
NO_PID_NAMESPACES = """#!/bin/sh
for argument in "$@"; do
    [ "$argument" = "--" ] && break
    [ "$argument" = "--pid" ] && { echo "unshare: unshare failed: Operation not permitted" >&2; exit 1; }
done
exec /usr/bin/unshare "$@"
"""


@as_root
@pytest.mark.parametrize("required", [True, False])
def test_a_machine_without_pid_namespaces_is_refused_when_the_sandbox_is_required(
    tmp_path: Path, shared: Path, server: int, required: bool
):
    (shared / "unshare").write_text(NO_PID_NAMESPACES)
    (shared / "unshare").chmod(0o755)
    env = {"PATH": f"{shared}:{os.environ['PATH']}"}
    payload = {"secrets": [], "outside": [], "port": server}
    output, step = run_step(tmp_path, SandboxRules(required=required), payload, env, (sys.executable,))
    if required:
        assert "a PID namespace" in step["refused"] and "Operation not permitted" in step["refused"]
        assert not (tmp_path / "cluster").exists()
    else:  # run as the rule allows, and the log says what was missing
        assert step["result"]["ok"] and "without a PID namespace" in output
