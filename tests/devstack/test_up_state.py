"""`make up` as a small cloud: what it stored is there after `make down` and a new `make up`, a pipeline recompiled
while it runs is what the next trigger runs, and the `relay` command's reruns and their ends show in its terminal.

Each test drives the real `python -m devstack.up` and `python -m devstack.down` (with the real fake-gcs-server, on
disk) and the real `relay` command in a shell that sourced the stack's env.sh, as the README's tour
has a user do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.demo import CATALOG, REPO
from devstack.gcs import fake_gcs_available
from devstack.pubsub import emulator_available
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from tests.devstack.support import Up

pytestmark = pytest.mark.integration


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    if reason := fake_gcs_available():
        pytest.skip(reason)
    stack = Up(tmp_path / "up")
    try:
        yield stack
    finally:
        stack.kill()


def relay(env: dict[str, str], *argv: str, codes: tuple[int, ...] = (0,)) -> Any:
    """The `relay` command in that shell, with --json; its answer."""
    ran = subprocess.run(
        [sys.executable, "-m", "relaycli.main", *argv, "--json"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert ran.returncode in codes, f"relay {' '.join(argv)}: {ran.stderr}{ran.stdout}"
    return json.loads(ran.stdout)


def ended(env: dict[str, str], key: str) -> str:
    answer = relay(env, "status", key, "--wait", "--timeout", "120", codes=(0, 1))  # 1: it ended, but not well
    return str(answer["state"])


def stored(env: dict[str, str], *buckets: str) -> dict[str, bytes]:
    """Every object of `buckets` and its bytes, as the stack's storage holds them."""
    store = GcsBlobStore(endpoint=env["STORAGE_EMULATOR_HOST"], tokens=NoTokenSource())
    return {uri: store.read(uri).data for bucket in buckets for uri in store.list(f"gs://{bucket}/")}


def test_a_restarted_stack_still_has_every_record_upload_and_baseline(up: Up, tmp_path: Path):
    env = up.start()
    plate = tmp_path / "plate-9.json"
    plate.write_text('{"plate": 9, "extra_data": {"od600": [0.21, 0.34]}}')
    relay(env, "upload", str(plate), "gs://lab-data/mine/")
    pushed = relay(env, "trigger", str(REPO / "examples" / "push-mine.yaml"), "--bucket", "relay-triggers")
    ratchet = relay(env, "trigger", str(REPO / "examples" / "ratchet.json"), "--bucket", "relay-triggers")
    keys = [pushed["run_key"], ratchet["run_key"]]
    assert [ended(env, key) for key in keys] == ["succeeded", "succeeded"]
    again = relay(env, "rerun", keys[0], "--force")  # the relay command's own: no function logs it
    assert ended(env, again["run_key"]) == "succeeded"
    before = stored(env, "relay-results", "lab-data", "ml-data")
    names = sorted(before)
    assert "gs://lab-data/mine/plate-9.json" in names and "gs://ml-data/mine/plate-9.json" in names
    assert any(name.endswith("/baseline.json") for name in names), names
    for key in [*keys, again["run_key"]]:
        assert f"gs://relay-results/runs/{key}/result.json" in names

    shown = [f"succeeded  {key}" for key in keys]
    if emulator_available() is None:
        shown += [f"rerun      {again['run_key']}", f"succeeded  {again['run_key']}"]
    # The terminal shows a run's end once its record is published, which follows the write `ended` saw.
    deadline = time.monotonic() + 30
    while not all(line in up.terminal.read_text() for line in shown) and time.monotonic() < deadline:
        time.sleep(0.2)
    said = up.down()
    assert "stopped `make up`" in said
    terminal = up.terminal.read_text()
    for key in keys:
        assert f"succeeded  {key}" in terminal, terminal
    if emulator_available() is None:  # what no function logs comes from the notify topic, on the emulator
        assert f"rerun      {again['run_key']}" in terminal, terminal
        assert f"succeeded  {again['run_key']}" in terminal, terminal

    env = up.start()  # the same folder: the state is the folder's, not the servers'
    after = stored(env, "relay-results", "lab-data", "ml-data")
    assert {uri: data for uri, data in after.items() if uri in before} == before
    assert set(before) <= set(after)
    assert relay(env, "status", keys[1])["state"] == "succeeded"
    # The ratchet decides against the kept baseline: a second run finds it, not a first one's empty ledger.
    second = relay(env, "trigger", str(REPO / "examples" / "ratchet.json"), "--bucket", "relay-triggers")
    assert ended(env, second["run_key"]) == "succeeded"
    up.down()


def test_a_pipeline_recompiled_while_the_stack_runs_is_what_the_next_trigger_runs(up: Up, tmp_path: Path):
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog)
    up.catalog = catalog
    env = up.start()
    pushed = relay(env, "trigger", str(REPO / "examples" / "push.json"), "--bucket", "relay-triggers")
    assert ended(env, pushed["run_key"]) == "succeeded"
    # A recompile whose step now stops at once, with a message: the next run fails with it, the first one did not.
    spec = catalog / "push.yaml"
    documents = list(yaml.safe_load_all(spec.read_text()))
    command = documents[0]["deploymentSpec"]["executors"]["exec-push-objects"]["container"]["command"]
    marker = "recompiled while the stack ran"
    assert "    return run_in_pipeline(" in command[-1]
    command[-1] = command[-1].replace(
        "    return run_in_pipeline(", f"    raise RuntimeError({marker!r})\n    return run_in_pipeline(", 1
    )
    spec.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    again = relay(
        env, "trigger", str(REPO / "examples" / "push.json"), "--bucket", "relay-triggers", "--name", "2.json"
    )
    assert ended(env, again["run_key"]) == "failed"
    run_dir = Path(env["RELAY_LOCAL_ROOT"])
    assert marker in (run_dir / again["run_key"] / "runner.log").read_text()
    assert marker not in (run_dir / pushed["run_key"] / "runner.log").read_text()
    up.down()


def test_a_run_whose_runner_died_is_recorded_failed_without_a_relay_sync(up: Up):
    env = up.start()
    ratchet = relay(env, "trigger", str(REPO / "examples" / "ratchet.json"), "--bucket", "relay-triggers")
    key = ratchet["run_key"]
    run_dir = Path(env["RELAY_LOCAL_ROOT"]) / key
    deadline = time.monotonic() + 60
    while not (run_dir / "started").exists():  # the runner has taken the folder: the pipeline runs
        assert time.monotonic() < deadline, f"{run_dir}: not started"
        time.sleep(0.05)
    run_file = run_dir / "run.json"
    os.killpg(int(json.loads(run_file.read_text())["pid"]), signal.SIGKILL)  # out of memory, say: no result written
    answer = relay(env, "status", key, "--wait", "--timeout", "60", codes=(1,))  # no `relay sync` run by anyone
    assert answer["state"] == "failed"
    assert "recorded by reconcile" in answer["result"]["message"]
    up.down()
    assert f"failed     {key}" in up.terminal.read_text()
