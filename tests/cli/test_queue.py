"""`relay pause` and `resume`, `relay runs --state queued`, `relay status` of a queued run (its place, why it
waits) and `relay cancel` of one, on records the functions' Relay writes, against the loopback KFP API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay import drain, records
from relay.adapters.routing import RoutingBlobStore
from relay.events import EventInfo, ObjectDelivery
from relay.service import Relay
from relaycli.config import Context
from relaycli.sync import relay_for
from tests.cli.support import ECHO, Ran, run
from tests.conftest import CATALOG
from tests.servers.kfp import KfpApiServer

pytestmark = pytest.mark.integration

POLICY = """\
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    caps: {max_in_flight: 1}
"""


@pytest.fixture
def kfp() -> Iterator[KfpApiServer]:
    with KfpApiServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def env(results: str, kfp: KfpApiServer, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_POLICY_URI": str(tmp_path / "policy.yaml"),
        "RELAY_BACKEND": "kfp",
        "RELAY_KFP_HOST": kfp.url,
        "RELAY_AUTH": "static",
        "RELAY_STATIC_TOKEN": "test-token",
    }


@pytest.fixture
def launcher(env: dict[str, str], blobs: RoutingBlobStore) -> Relay:
    """The functions' Relay on the same records, policy and KFP API as the commands."""
    return relay_for(Context(env=env, store=blobs), None)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], blobs: RoutingBlobStore) -> Callable[..., Ran]:
    def command(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    return command


def deliver(relay: Relay, name: str) -> str:
    """A trigger file of tenant lab lands, and its event is handled as the function handles it."""
    data = json.dumps(ECHO).encode()
    generation = relay.store.write(f"gs://triggers/lab/{name}", data)
    event = EventInfo(id=f"evt-{name}", type="google.cloud.storage.object.v1.finalized", source="s", time=relay.clock())
    outcome = drain.deliver(
        relay, ObjectDelivery(event, "triggers", f"lab/{name}", generation, len(data), "storage-event")
    )
    return str(outcome.run_key)


def test_a_paused_tenant_queues_shows_why_cancels_a_queued_run_and_resumes_in_order(
    cli: Callable[..., Ran], launcher: Relay, kfp: KfpApiServer
):
    paused = cli("pause", "--tenant", "lab")
    assert (paused.code, paused.out) == (0, "tenant lab paused: its runs queue and none launches\n")
    assert cli("pause", "--tenant", "lab").out == "tenant lab was paused already\n"
    first, second, third = (deliver(launcher, f"plate-{n}.json") for n in range(3))
    listed = cli("runs", "--state", "queued", "--json").json()
    assert sorted(run["run_key"] for run in listed) == sorted([first, second, third])
    status = cli("status", second, "--json").json()
    assert status["queue"] == {"position": 2, "reason": "tenant lab is paused"}
    shown = cli("status", second).out
    assert "queue place  2 in tenant lab's queue\n" in shown and "waiting for  tenant lab is paused\n" in shown
    cancelled = cli("cancel", second)
    assert cancelled.out == f"{second} cancelled while queued: it never launched\n"
    resumed = cli("resume", "--tenant", "lab", "--json").json()
    assert resumed["launched"] == [first]  # the cap of 1: the next waits for this one's end
    assert cli("status", third, "--json").json()["queue"] == {
        "position": 1,
        "reason": "tenant lab has 1 runs in flight (tenants.lab.caps.max_in_flight)",
    }
    assert [run["run_key"] for run in cli("runs", "--state", "queued", "--json").json()] == [third]
    assert [r["display_name"] for r in kfp.runs] == [first]
    assert cli("status", first, "--json").json()["state"] == records.LAUNCHED
    refused = cli("pause", "--tenant", "other")
    assert refused.code != 0 and "expected a tenant of the policy (lab), found 'other'" in refused.err
