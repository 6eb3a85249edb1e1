"""`relay sync`, `relay cancel` and `relay rerun` against the loopback KFP API, configured as the functions are."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from relay import lifecycle, naming, records
from relay.adapters.routing import RoutingBlobStore
from relay.service import Relay
from relaycli.config import Context
from relaycli.main import main
from relaycli.sync import relay_for
from tests.cli.support import ECHO, Ran, drop, fields, run
from tests.conftest import CATALOG
from tests.servers.kfp import KfpApiServer


@pytest.fixture
def kfp() -> Iterator[KfpApiServer]:
    with KfpApiServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def env(results: str, kfp: KfpApiServer) -> dict[str, str]:
    return {
        "RELAY_RESULTS_URI": results,
        "RELAY_CATALOG_URI": str(CATALOG),
        "RELAY_BACKEND": "kfp",
        "RELAY_KFP_HOST": kfp.url,
        "RELAY_AUTH": "static",
        "RELAY_STATIC_TOKEN": "test-token",
    }


@pytest.fixture
def launcher(env: dict[str, str], blobs: RoutingBlobStore) -> Relay:
    """The functions' Relay on the same records and KFP API as the commands."""
    return relay_for(Context(env=env, store=blobs), None)


@pytest.fixture
def relay_cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], blobs: RoutingBlobStore) -> Callable[..., Ran]:
    def command(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    return command


def launched(launcher: Relay, name: str = "nightly.json") -> tuple[str, str]:
    outcome = drop(launcher, {**ECHO, "run_key": "nightly"}, name)
    assert outcome.outcome == "launched" and outcome.run_key and outcome.run_id
    return outcome.run_key, outcome.run_id


def result(launcher: Relay, key: str) -> dict[str, Any]:
    return records.decode(launcher.store.read(naming.result_record(launcher.settings.results_uri, key)).data)


def test_sync_records_a_run_that_failed_on_kfp(launcher: Relay, kfp: KfpApiServer, relay_cli):
    key, run_id = launched(launcher)
    kfp.set_run_state(run_id, "RUNNING")
    ran = relay_cli("sync")
    assert ran.code == 0 and "1 running" in ran.out
    kfp.set_run_state(run_id, "FAILED", "task describe failed: exit status 1")
    ran = relay_cli("sync", "--json")
    [seen] = ran.json()["seen"]
    assert (ran.json()["stopped"], ran.json()["after"]) == ("", key)
    assert seen["run_key"] == key and seen["recorded"] == "running" and seen["action"] == "result"
    assert result(launcher, key)["message"].startswith("task describe failed: exit status 1")
    assert relay_cli("sync").out.startswith("no launched run without a result")


def test_cancel_then_rerun_through_the_cli(launcher: Relay, kfp: KfpApiServer, relay_cli):
    key, run_id = launched(launcher)
    ran = relay_cli("cancel", key)
    assert ran.code == 0 and ran.out.strip() == f"{key} cancelled (run {run_id} terminated)"
    assert kfp.runs[0]["state"] == "CANCELED" and result(launcher, key)["state"] == "cancelled"
    again = relay_cli("cancel", key)
    assert again.code == 0 and "already cancelled; nothing changed" in again.out
    ran = relay_cli("rerun", key, "--json")
    assert ran.code == 0 and ran.json()["run_key"] == f"{key}-attempt-2"
    assert [r["display_name"] for r in kfp.runs] == [key, f"{key}-attempt-2"]
    refused = relay_cli("rerun", key)
    assert refused.code == 1 and f"{key}-attempt-2 is launched" in refused.err
    missing = relay_cli("cancel", "no-such-run")
    assert missing.code == 1 and "no run no-such-run" in missing.err


def test_two_reruns_at_once_make_one_attempt(launcher: Relay, kfp: KfpApiServer, env, blobs: RoutingBlobStore):
    key, _ = launched(launcher)
    assert main(["cancel", key], env=env, store=blobs) == 0
    start = threading.Barrier(4)
    codes: list[int] = []

    def rerun() -> None:
        start.wait()
        codes.append(main(["rerun", key], env=env, store=blobs))

    threads = [threading.Thread(target=rerun) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["display_name"] for r in kfp.runs] == [key, f"{key}-attempt-2"]
    assert codes.count(0) >= 1  # the one that started it (and any that found it started); the rest were refused


def test_a_rerun_refused_names_the_flag_and_status_shows_the_later_attempts(
    launcher: Relay, kfp: KfpApiServer, relay_cli
):
    key, run_id = launched(launcher)
    kfp.set_run_state(run_id, "FAILED", "task describe failed: exit status 1")
    assert relay_cli("sync").code == 0
    attempt = relay_cli("rerun", key, "--json").json()["run_key"]
    kfp.set_run_state(kfp.runs[1]["run_id"], "SUCCEEDED")
    assert relay_cli("sync").code == 0
    refused = relay_cli("rerun", key)
    assert refused.err == f"relay rerun: {attempt} is succeeded; ask again with --force to run it again\n"
    assert relay_cli("rerun", key, "--force").code == 0
    status = relay_cli("status", key)  # the first run failed: what became of it is in the later attempts
    assert fields(status.out)["later attempts"] == [f"{attempt}  succeeded", f"{key}-attempt-3  launched"]
    assert status.out.splitlines()[-1] == f"the latest attempt: relay status {key}-attempt-3"
    second = relay_cli("status", attempt, "--json").json()
    assert [later["run_key"] for later in second["later_attempts"]] == [f"{key}-attempt-3"]
    assert fields(relay_cli("status", attempt).out)["attempt"] == [f"2 of {key} (a rerun)"]


RETRYING = b"""
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    retries:
      echo: {retries: 1, backoff: 10m}
"""


def test_a_run_kfp_lost_is_retried_once_and_status_and_runs_say_when(
    env: dict[str, str], blobs: RoutingBlobStore, kfp: KfpApiServer, capsys: pytest.CaptureFixture[str]
):
    blobs.write("gs://c/policy.yaml", RETRYING)
    env = {**env, "RELAY_POLICY_URI": "gs://c/policy.yaml"}
    launcher = relay_for(Context(env=env, store=blobs), None)
    outcome = drop(launcher, {**ECHO, "run_key": "nightly"}, "lab/nightly.json")
    key, second = str(outcome.run_key), lifecycle.attempt_key(str(outcome.run_key), 2)
    kfp.set_run_state(str(outcome.run_id), "FAILED", "the cluster's node went away", code=14)  # UNAVAILABLE

    def cli(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    synced = cli("sync")
    assert synced.code == 0 and "failed" in synced.out
    assert result(launcher, key)["failure"] == "infrastructure"
    decided = cli("sync", "--json").json()["retried"]
    [waiting] = decided
    assert (waiting["action"], waiting["next_key"]) == ("waiting", second)
    [shown] = fields(cli("status", key).out)["next attempt"]
    assert shown == f"{second} at {waiting['retry_at']}"
    listed = cli("runs", "--json").json()
    assert [(r["run_key"], r["retry_at"]) for r in listed] == [(key, waiting["retry_at"])]
    assert f"retry as {second} at" in cli("runs").out
    # Ten minutes on, a tick starts the next attempt on KFP; it fails the same way and is left failed.
    later = replace(launcher, clock=lambda: launcher.clock() + timedelta(minutes=11))
    [started] = lifecycle.reconcile(later).retried
    assert (started.action, started.next_key) == ("started", second)
    assert [r["display_name"] for r in kfp.runs] == [key, second]
    kfp.set_run_state(kfp.runs[1]["run_id"], "FAILED", "the cluster's node went away", code=14)
    [last] = lifecycle.reconcile(later).retried
    assert (last.action, last.message) == ("none", "attempt 2 was the last (tenants.lab.retries.echo.retries: 1)")
    assert len(kfp.runs) == 2
    status = cli("status", second)
    assert fields(status.out)["attempt"] == [f"2 of {key} (a retry)"] and "next attempt" not in fields(status.out)


def test_rerun_from_failure_says_why_kfp_cannot_and_starts_nothing(launcher: Relay, kfp: KfpApiServer, relay_cli):
    key, run_id = launched(launcher)
    kfp.set_run_state(run_id, "FAILED", "task describe failed: exit status 1")
    refused = relay_cli("rerun", key, "--from-failure")
    assert refused.code == 2 and len(kfp.runs) == 1
    assert refused.err.splitlines() == [
        "relay rerun: --from-failure: the KFP v2beta1 API cannot rerun only a run's failed tasks: it creates new "
        "runs, whole",
        f"  a whole new attempt: relay rerun {key}",
    ]
