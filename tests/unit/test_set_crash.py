"""A process killed between a set's close and its launch (SIGKILL, in a real subprocess): the redelivery, or the
reconcile tick, launches the set exactly once, with all its objects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from relay import lifecycle, set_store
from relay.service import Relay, handle_delivery
from tests.fakes import FakeBackend
from tests.unit.set_crash_child import RESULTS, FolderStore, notification, relay_on

ROOT = Path(__file__).resolve().parents[2]


def killed_while_closing(tmp_path: Path) -> tuple[Relay, FakeBackend, list[int]]:
    """Two of a set of three objects delivered here; the third's delivery in a child killed right after closing."""
    store = FolderStore(tmp_path)
    backend = FakeBackend()
    relay = relay_on(store, backend)
    generations = [store.write(f"gs://lab-data/plates/k/{n}.csv", b"a,b\n") for n in range(3)]
    for n in range(2):
        assert handle_delivery(relay, notification(f"plates/k/{n}.csv", generations[n])).outcome == "collected"
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}
    child = subprocess.run(
        [sys.executable, "-m", "tests.unit.set_crash_child", str(tmp_path), "plates/k/2.csv", str(generations[2])],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    # Closed, and nothing launched or claimed: the child died between the two.
    assert [uri for uri in store.list(f"{RESULTS}/sets/") if uri.endswith("/closed.json")] != []
    assert [uri for uri in store.list(f"{RESULTS}/runs/")] == []
    return relay, backend, generations


def test_a_redelivery_after_the_crash_launches_the_set_once(tmp_path: Path):
    relay, backend, generations = killed_while_closing(tmp_path)
    outcome = handle_delivery(relay, notification("plates/k/2.csv", generations[2]))
    assert outcome.outcome == "launched"
    assert handle_delivery(relay, notification("plates/k/0.csv", generations[0])).outcome == "duplicate"
    assert lifecycle.reconcile(relay).sets == ()  # done: nothing left for the tick
    [launch] = backend.launches
    assert sorted(launch.parameters["items"]) == [f"gs://lab-data/plates/k/{n}.csv" for n in range(3)]  # type: ignore[call-overload]


def test_the_tick_after_the_crash_launches_the_set_once_and_a_late_redelivery_finds_it(tmp_path: Path):
    relay, backend, generations = killed_while_closing(tmp_path)
    [outcome] = lifecycle.reconcile(relay).sets
    assert outcome.outcome == "launched"
    assert handle_delivery(relay, notification("plates/k/2.csv", generations[2])).outcome == "duplicate"
    assert list(set_store.open_sets(relay.store, RESULTS)) == []
    [launch] = backend.launches
    assert sorted(launch.parameters["items"]) == [f"gs://lab-data/plates/k/{n}.csv" for n in range(3)]  # type: ignore[call-overload]
