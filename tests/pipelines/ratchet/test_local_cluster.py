"""The local destination: algorithms as Python trees, each served by a warm worker that is killed at a timeout."""

from __future__ import annotations

import contextlib
import os
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.steps.ratchet.clusters import ClusterContext, ClusterError, ExportedFile
from pipelines.steps.ratchet.clusters.local import LocalCluster


def code(path: str, source: str) -> ExportedFile:
    return ExportedFile(kind="code", path=path, data=textwrap.dedent(source).encode())


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return LocalCluster.from_options(
        {"kind": "local", "root": str(tmp_path / "cluster")}, ClusterContext(tmp_path, "w")
    )


def test_names_are_the_cluster_folders(cluster: LocalCluster):
    assert cluster.data_name("tokenize", "a/b.txt") == "data://local/tokenize/a/b.txt"
    assert cluster.algo_name("tokenize", "latestPrivate") == "algo://local/tokenize"


def test_a_deployed_algorithm_answers_and_its_latency_is_its_own_work(cluster: LocalCluster):
    cluster.deploy("double", [code("double.py", "def apply(input):\n    return input * 2\n")])
    result = cluster.call("double", 21, timeout=10)
    assert (result.ok, result.output, result.error, result.timed_out) == (True, 42, "", False)
    assert 0 <= result.seconds < 1  # apply alone: the worker's start-up is no part of it


def test_algorithms_call_each_other_and_read_data_through_the_seed_client(cluster: LocalCluster):
    cluster.deploy("shout", [code("src/shout.py", "def apply(input):\n    return input.upper()\n")])
    greeting = """
        import Algorithmia

        def apply(input):
            client = Algorithmia.client()
            greeting = client.file("data://local/greet/hello.txt").getString().strip()
            return client.algo("algo://local/shout/1.0.0").pipe(f"{greeting}, {input}").result
    """
    data = ExportedFile(kind="data", path="hello.txt", data=b"hello\n", collection="greet")
    cluster.deploy("greet", [code("greet.py", greeting), data])
    assert cluster.call("greet", "world", timeout=10).output == "HELLO, WORLD"


def test_a_call_past_its_timeout_is_killed_and_counted_failed(cluster: LocalCluster):
    token = f"sleeper-{uuid.uuid4().hex}"  # the worker writes nowhere the test can read: its child is found by this
    sleeper = f"""
        import subprocess, sys, time

        def apply(input):
            # A child of the worker too: the kill must take the whole process group.
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # {token}"])
            time.sleep(30)
            return "should never happen"
    """
    cluster.deploy("sleeper", [code("sleeper.py", sleeper)])
    seen: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(lambda: seen.extend(wait_for_process(token)))
        result = cluster.call("sleeper", None, timeout=2)
        watch.result()
    assert not result.ok and result.timed_out
    assert result.error == "timed out after 2 s: the worker was killed"
    assert seen and eventually_gone(seen[0])


def wait_for_process(token: str, timeout: float = 5.0) -> list[int]:
    """The pids of processes whose command line holds `token`, as soon as there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
        if found:
            return found
        time.sleep(0.02)
    return []


def eventually_gone(pid: int, timeout: float = 5.0) -> bool:
    """The process has ended (gone, or a zombie no one has reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_a_failing_algorithm_reports_its_error(cluster: LocalCluster):
    cluster.deploy("bad", [code("bad.py", "def apply(input):\n    raise ValueError(f'no good: {input}')\n")])
    result = cluster.call("bad", "x", timeout=10)
    assert not result.ok and not result.timed_out and result.error == "ValueError: no good: x"


NESTED_MISSING = (
    "import Algorithmia\ndef apply(input):\n    return Algorithmia.client().algo('algo://local/nope').pipe(1)\n"
)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("import sys\ndef apply(input):\n    sys.exit(3)\n", "exited 3 without a reply"),
        ("def apply(input):\n    return object()\n", "TypeError: Object of type object is not JSON serializable"),
        ("apply = 1\n", "defines no apply(input)"),
        (NESTED_MISSING, "no algorithm 'nope'"),
    ],
)
def test_what_goes_wrong_inside_the_worker_is_the_calls_error(cluster: LocalCluster, source: str, fragment: str):
    cluster.deploy("odd", [code("odd.py", source)])
    result = cluster.call("odd", None, timeout=10)
    assert not result.ok and fragment in result.error


def test_prints_do_not_corrupt_the_reply_and_the_environment_holds_no_secrets(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RELAY_SECRET_KAGGLE_KEY", "s3cr3t")
    source = "import os\ndef apply(input):\n    print('noise')\n    return sorted(os.environ)\n"
    cluster.deploy("env", [code("env.py", source)])
    result = cluster.call("env", None, timeout=10)
    assert result.ok and set(result.output) == {"PATH", "HOME", "LANG", "TMPDIR"}


def test_a_redeploy_replaces_the_whole_tree_and_the_warm_worker(cluster: LocalCluster):
    cluster.deploy("a", [code("a.py", "def apply(input):\n    return 1\n"), code("old.py", "")])
    assert cluster.call("a", None, timeout=10).output == 1
    cluster.deploy("a", [code("a.py", "def apply(input):\n    return 2\n")])
    assert cluster.call("a", None, timeout=10).output == 2
    assert not (cluster.root / "algorithms" / "a" / "old.py").exists()


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ([code("other.py", "")], "expected a.py (or src/a.py), found ['other.py']"),
        ([code("a.py", ""), code("../escape.py", "")], "expected a relative path inside"),
        ([code("a.py", ""), ExportedFile("data", "/etc/x", b"", "c")], "expected a relative path inside"),
    ],
)
def test_a_tree_without_its_entry_point_or_leaving_the_folder_is_refused(
    cluster: LocalCluster, files: list[ExportedFile], fragment: str
):
    with pytest.raises(ClusterError, match=r"a: |expected a relative") as caught:
        cluster.deploy("a", files)
    assert fragment in str(caught.value)
    assert not (cluster.root / "algorithms" / "a").exists()


def test_an_algorithm_not_deployed_fails_without_a_worker(cluster: LocalCluster):
    result = cluster.call("ghost", None, timeout=10)
    assert not result.ok and "not deployed" in result.error


def test_the_default_root_is_the_runs_own(tmp_path: Path):
    first = LocalCluster.from_options({}, ClusterContext(tmp_path / "run-1", "my-flow"))
    second = LocalCluster.from_options({}, ClusterContext(tmp_path / "run-2", "my-flow"))
    assert first.root == (tmp_path / "run-1" / "cluster" / "my-flow").resolve() and first.root != second.root
    assert os.path.isabs(first.root)


# A warm worker's state: a module-level counter, and the process it lives in (named at its start: in its own PID
# namespace every worker's pid is the same).
COUNTER = """
import os, sys, time, uuid

calls = 0
worker = uuid.uuid4().hex

def apply(input):
    global calls
    calls += 1
    if input == "crash":
        os._exit(7)
    if input == "hang":
        time.sleep(30)
    return {"calls": calls, "worker": worker}
"""


def processes_in(folder: Path) -> set[int]:
    """The pids (here) of the processes whose working folder is in `folder`: a worker, its init and `unshare`."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.add(int(entry.name))
    return found


@pytest.fixture
def counter(cluster: LocalCluster) -> LocalCluster:
    cluster.deploy("counter", [code("counter.py", COUNTER)])
    return cluster


def test_a_worker_stays_warm_across_calls(counter: LocalCluster):
    first, second, third = (counter.call("counter", None, timeout=10) for _ in range(3))
    assert [r.output["calls"] for r in (first, second, third)] == [1, 2, 3]  # module globals persist
    assert first.output["worker"] == second.output["worker"] == third.output["worker"]


def test_a_worker_that_dies_mid_call_is_reported_and_the_next_call_gets_a_fresh_one(counter: LocalCluster):
    before = counter.call("counter", None, timeout=10).output
    processes = processes_in(counter.root)
    crashed = counter.call("counter", "crash", timeout=10)
    assert not crashed.ok and not crashed.timed_out
    assert crashed.error == "counter: the worker exited 7 without a reply"
    assert processes and all(eventually_gone(pid) for pid in processes)
    after = counter.call("counter", None, timeout=10).output
    assert after["calls"] == 1 and after["worker"] != before["worker"]


def test_a_timeout_kills_the_warm_worker_and_the_next_call_gets_a_fresh_one(counter: LocalCluster):
    before = counter.call("counter", None, timeout=10).output
    processes = processes_in(counter.root)
    hung = counter.call("counter", "hang", timeout=1)
    assert not hung.ok and hung.timed_out and hung.error == "timed out after 1 s: the worker was killed"
    assert 1 <= hung.seconds < 5
    assert processes and all(eventually_gone(pid) for pid in processes)
    after = counter.call("counter", None, timeout=10).output
    assert after["calls"] == 1 and after["worker"] != before["worker"]


def test_only_the_last_called_algorithm_keeps_a_worker(counter: LocalCluster):
    counter.deploy("other", [code("other.py", "def apply(input):\n    return 'other'\n")])
    assert counter.call("counter", None, timeout=10).output["calls"] == 1
    first = processes_in(counter.root / "algorithms" / "counter")
    assert counter.call("other", None, timeout=10).output == "other"
    assert first and all(eventually_gone(pid) for pid in first)  # one worker's memory and processes at a time
    assert counter.call("counter", None, timeout=10).output["calls"] == 1


def test_close_stops_the_worker_and_removes_its_folder(counter: LocalCluster):
    counter.call("counter", None, timeout=10)
    processes = processes_in(counter.root)
    assert processes and any((counter.root / ".calls").iterdir())
    counter.close()
    assert all(eventually_gone(pid) for pid in processes) and not any((counter.root / ".calls").iterdir())


LIMITS = """
import resource

def apply(input):
    return resource.getrlimit(resource.RLIMIT_CPU)
"""


def test_each_call_gets_its_cpu_allowance_under_the_workers_ceiling(cluster: LocalCluster):
    """Soft: this call's timeout and a second over what the worker used; hard: its life's ceiling, never raised."""
    cluster.deploy("limits", [code("limits.py", LIMITS)])
    assert cluster.call("limits", None, timeout=10).output == [11, 611]  # 10 s + 1, and WORKER_CPU (600) more
    assert cluster.call("limits", None, timeout=4.5).output == [6, 611]
    # More than the ceiling holds: a fresh worker, whose ceiling is this call's allowance and WORKER_CPU more.
    assert cluster.call("limits", None, timeout=700).output == [701, 1301]


NOISY = """
import os, subprocess, sys

def apply(input):
    print("a print")
    os.write(1, b"raw bytes to descriptor 1")
    subprocess.run(["echo", "a child's output"], check=True)
    return {"stdin": sys.stdin.read(), "n": input}
"""


def test_what_the_algorithm_writes_or_reads_never_touches_the_calls_pipe(cluster: LocalCluster):
    cluster.deploy("noisy", [code("noisy.py", NOISY)])
    outputs = [cluster.call("noisy", n, timeout=10).output for n in (1, 2)]
    assert outputs == [{"stdin": "", "n": 1}, {"stdin": "", "n": 2}]


def test_an_algorithm_that_fails_to_load_is_tried_afresh_at_the_next_call(cluster: LocalCluster, tmp_path: Path):
    flaky = """
        import os, pathlib
        marker = pathlib.Path(os.environ["HOME"]).parent / "loaded-once"
        if not marker.exists():
            raise RuntimeError("first load fails")

        def apply(input):
            return "loaded"
    """
    cluster.deploy("flaky", [code("flaky.py", flaky)])
    failed = cluster.call("flaky", None, timeout=10)
    assert not failed.ok and failed.error == "RuntimeError: first load fails"
    (cluster.root / ".calls" / "loaded-once").touch()
    assert cluster.call("flaky", None, timeout=10).output == "loaded"
