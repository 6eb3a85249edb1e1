"""A real process killed between a run's end being seen and its chain's next launch: the next tick, in another
process, still ends with exactly one next run. The store is a folder (its create-only and generation rules are
Cloud Storage's) and the backend a log of submits on disk, both shared by the two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from relay import chain_runs, drain, lifecycle, naming, records
from relay.adapters.localfs import LocalBlobStore
from relay.catalog import Catalog
from relay.config import Settings
from relay.events import EventInfo, InlineDelivery
from relay.ports import RUN_PENDING, LaunchedRun, LaunchRequest, RunState
from relay.results import record_result
from relay.service import Relay
from tests.conftest import CATALOG, NOW

CHAIN = [{"pipeline": "echo", "parameters": {"message": "after: {outputs.Output}"}}]
MOMENTS = ("end", "claim", "submit")  # killed after recording the end, after the next run's claim, after its submit


@dataclass
class DiskBackend:
    """Every submit appended to `submits.log` (one line each, so a second submit of a key shows); `kill_at`
    "claim" or "submit" kills this process just before or just after submitting a chained run."""

    folder: Path
    kill_at: str = ""
    name: str = "disk"

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        chained = "-then-" in request.run_key
        if chained and self.kill_at == "claim":
            os.kill(os.getpid(), signal.SIGKILL)
        with (self.folder / "submits.log").open("a") as log:
            log.write(json.dumps({"run_key": request.run_key, "parameters": dict(request.parameters)}) + "\n")
        if chained and self.kill_at == "submit":
            os.kill(os.getpid(), signal.SIGKILL)
        return LaunchedRun(f"run-{request.run_key}", "")

    def find_run(self, run_key: str) -> LaunchedRun | None:
        return LaunchedRun(f"run-{run_key}", "") if run_key in submitted(self.folder) else None

    def run_state(self, run_key: str, run_id: str) -> RunState:
        return RunState(RUN_PENDING)

    def terminate(self, run_key: str, run_id: str) -> None:
        raise AssertionError("nothing is cancelled here")


def submitted(folder: Path) -> list[str]:
    log = folder / "submits.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line)["run_key"] for line in lines]


def build(folder: Path, *, kill_at: str = "", later: float = 0.0) -> Relay:
    settings = Settings(results_uri=str(folder / "results"), catalog_uri=str(folder / "catalog"), max_event_age=3600)
    store = LocalBlobStore(folder)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=DiskBackend(folder, kill_at),
        clock=lambda: NOW + timedelta(seconds=later),
    )


def end_and_follow(folder: str, first: str, kill_at: str) -> None:
    """The child: record the first run's end as its exit step would, then start its chain (and be killed)."""
    relay = build(Path(folder), kill_at=kill_at)
    launch = records.decode(relay.store.read(naming.launch_record(relay.settings.results_uri, first)).data)
    ended = records.result_record(
        run_key=first,
        pipeline="echo",
        backend="disk",
        run_id=str(launch["run_id"]),
        succeeded=True,
        message="done",
        outputs={"Output": "plate 1 counted"},
        metrics={},
        started=NOW,
        finished=NOW,
    )
    record_result(relay.store, None, relay.settings.results_uri, ended)
    if kill_at == "end":
        os.kill(os.getpid(), signal.SIGKILL)
    chain_runs.follow(relay, first)


@pytest.mark.parametrize("moment", MOMENTS)
def test_killed_between_the_end_and_the_next_launch_a_later_tick_starts_the_next_run_exactly_once(
    tmp_path: Path, moment: str
):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "echo.yaml").write_bytes((CATALOG / "echo.yaml").read_bytes())
    relay = build(tmp_path)
    message = InlineDelivery(
        event=EventInfo(id="m-1", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW),
        topic="projects/proj-p/topics/triggers",
        message_id="m-1",
        data=json.dumps({"pipeline": "echo", "parameters": {"message": "plate 1"}, "chain": CHAIN}).encode(),
        format="json",
    )
    first = str(drain.deliver(relay, message).run_key)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from {__name__} import end_and_follow as f; f({str(tmp_path)!r}, {first!r}, {moment!r})",
        ],
        cwd=Path(__file__).parents[2],
        env=os.environ,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    after = f"{first}-then-1"
    assert submitted(tmp_path) == [first] + ([after] if moment == "submit" else [])
    # Another process, once the dead one's claim has run out: one tick settles it.
    later = build(tmp_path, later=relay.settings.claim_lease + 1)
    lifecycle.reconcile(later)
    lifecycle.reconcile(later)
    assert submitted(tmp_path) == [first, after]
    launch = records.decode(later.store.read(naming.launch_record(later.settings.results_uri, after)).data)
    assert (launch["state"], launch["run_id"]) == (records.LAUNCHED, f"run-{after}")
    assert launch["parameters"]["message"] == "after: plate 1 counted"
    assert launch["trigger"]["chained_from"] == first
    results = later.settings.results_uri
    assert not Path(naming.chain_record(results, first)).exists()
    assert json.loads(Path(naming.chained_record(results, first)).read_text())["chained"][0]["run_key"] == after
