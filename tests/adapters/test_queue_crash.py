"""A drainer process killed (SIGKILL, a real process) between taking a queued run and recording its launch: the
next drain after the claim's lease takes the run over, asking the backend first, and the run exists exactly once
on the loopback KFP, whether the process died before its submit or after it. The drainer is
tests/adapters/crash_drainer.py; the store is fake-gcs-server, shared by both processes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack import FakeGcsServer, create_bucket, fake_gcs_available
from relay import drain, lifecycle, naming, queue, records
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.events import EventInfo, ObjectDelivery
from relay.service import Relay
from tests.adapters.crash_drainer import relay_for
from tests.conftest import CATALOG
from tests.servers.kfp import KfpApiServer

pytestmark = pytest.mark.integration

BUCKET = "relay-crash"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    missing = fake_gcs_available()
    if missing:
        pytest.fail(f"the crash tests need fake-gcs-server: {missing}")
    with FakeGcsServer(tmp_path_factory.mktemp("crash")) as running:
        create_bucket(running.url, BUCKET)
        yield running


@pytest.fixture
def kfp() -> Iterator[KfpApiServer]:
    """The loopback KFP, taking any token: the drainer's process and this one each bring their own."""
    with KfpApiServer() as server:
        yield server
    assert server.errors == []


def runs_of(server: KfpApiServer, key: str) -> list[str]:
    return [str(run["run_id"]) for run in server.runs if run["display_name"] == key]


def launch(relay: Relay, key: str) -> dict[str, object]:
    return records.decode(relay.store.read(naming.launch_record(relay.settings.results_uri, key)).data)


def killed_at_the_hook(spec: dict[str, object]) -> int:
    """Run the drainer until it reports its hook point, then SIGKILL it; its exit status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.adapters.crash_drainer", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 120)
        line = child.stdout.readline().decode() if ready else ""
        assert line.strip() == "HOOK", f"the drainer did not reach its hook: {line!r} {child.stderr.read()[-2000:]!r}"
        os.kill(child.pid, signal.SIGKILL)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    ("state", "after", "runs_at_death"),
    [("launching", True, 0), ("launched", False, 1)],
    ids=["killed-after-the-dequeue-claim", "killed-after-the-submit"],
)
def test_a_drainer_process_killed_between_queue_and_launch_ends_with_exactly_one_run(
    gcs_server: FakeGcsServer, kfp: KfpApiServer, request: pytest.FixtureRequest, state: str, after: bool,
    runs_at_death: int,
):  # fmt: skip
    where = f"gs://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"
    spec = {
        "gcs": gcs_server.url,
        "kfp": kfp.url,
        "results": f"{where}/results",
        "catalog": f"{where}/catalog",
        "triggers": f"{where}/triggers/lab/",
        "state": state,
        "after": after,
    }
    store = GcsBlobStore(endpoint=gcs_server.url, tokens=NoTokenSource())
    store.write(f"{where}/catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    relay = relay_for({k: str(v) for k, v in spec.items()}, store)
    # Queued while the tenant is paused, so that the killed process is the first to take it.
    queue.pause(store, relay.settings.results_uri, "lab", "", by="test", now=datetime.now(UTC))
    data = json.dumps({"pipeline": "echo", "parameters": {"message": "plate 1"}}).encode()
    name = f"{spec['triggers']}t1.json".removeprefix(f"gs://{BUCKET}/")
    generation = store.write(f"gs://{BUCKET}/{name}", data)
    event = EventInfo("evt-1", "google.cloud.storage.object.v1.finalized", "s", datetime.now(UTC))
    queued = drain.deliver(relay, ObjectDelivery(event, BUCKET, name, generation, len(data), "storage-event"))
    key = str(queued.run_key)
    assert queued.outcome == "queued"
    queue.resume(store, relay.settings.results_uri, "lab", "")

    assert killed_at_the_hook(spec) == -signal.SIGKILL
    assert launch(relay, key)["state"] == "launching" and len(runs_of(kfp, key)) == runs_at_death
    assert drain.drain(relay).launched == ()  # the dead drainer's claim still holds: no one else launches it

    later = datetime.now(UTC) + timedelta(seconds=relay.settings.claim_lease + 1)
    tick = lifecycle.reconcile(replace(relay, clock=lambda: later))
    assert tick.drained is not None and tick.drained.launched == (key,)
    (run_id,) = runs_of(kfp, key)  # exactly one run, whenever the drainer died
    saved = launch(relay, key)
    assert (saved["state"], saved["run_id"]) == ("launched", run_id)
    assert drain.drain(relay).launched == () and len(runs_of(kfp, key)) == 1
