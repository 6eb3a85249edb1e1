"""`make up`'s own parts: the port check, the lines a new shell pastes, the events it shows as they happen."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import PubSubEmulator, create_topic, emulator_available, pidfile
from devstack.pubsub import subscriber_client, subscription_path
from devstack.up import EventFollower, PortInUseError, check_ports, shell_exports, shell_lines
from relaycli.output import Paint
from tests.infra.gcloud import offline_config, sdk_root

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_a_port_in_use_is_one_line_that_says_how_to_move():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError) as refused:
            check_ports({"Cloud Storage emulator, STORAGE_PORT": port})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"127.0.0.1:{port} (Cloud Storage emulator, STORAGE_PORT) is in use")
    assert message.endswith("make up STORAGE_PORT=4444 PUBSUB_PORT=8086")
    check_ports({"Cloud Storage emulator, STORAGE_PORT": port})  # free again once its holder is gone


def test_the_pasted_lines_work_in_a_new_shell_whatever_the_folder_is_called(tmp_path: Path):
    repo = tmp_path / 'a "clone" with $pace`s'
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "relay").write_text("#!/bin/sh\necho relay here\n")
    (bin_dir / "relay").chmod(0o755)
    lines = shell_lines(repo, bin_dir, {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443", "RELAY_X": "a b'c"})
    script = "\n".join([*lines, "pwd", "relay", 'echo "$STORAGE_EMULATOR_HOST|$RELAY_X"'])
    shown = subprocess.run(
        ["bash", "--norc", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [str(repo), "relay here", "http://127.0.0.1:4443|a b'c"]


def test_each_outcome_and_each_run_end_is_shown_once_as_it_happens(tmp_path: Path):
    log = tmp_path / "function-on_object_finalized.log"
    states: dict[str, tuple[str, str]] = {}
    out = io.StringIO()
    follower = EventFollower([log, tmp_path / "not-yet.log"], states.get, out, Paint(False))

    def append(text: str) -> None:
        with log.open("a") as file:
            file.write(text)

    launched = {
        "outcome": "launched",
        "run_key": "push-1",
        "run_id": "local-1",
        "pipeline": "push",
        "trigger_uri": "gs://relay-triggers/push.json",
        "message": "launched push",
    }
    append("[gunicorn] booting worker\n" + json.dumps(launched) + "\n")
    append(json.dumps({"outcome": "rejected", "run_key": "push-2", "pipeline": "push", "message": "gs://x: bad"})[:20])
    follower.poll()
    follower.poll()  # nothing new: nothing printed twice
    assert [line[10:] for line in out.getvalue().splitlines()] == [
        "launched   push-1  push  gs://relay-triggers/push.json -> run local-1"
    ]
    append(
        json.dumps({"outcome": "rejected", "run_key": "push-2", "pipeline": "push", "message": "gs://x: bad"})[20:]
        + "\n"
    )
    states["push-1"] = ("succeeded", "sent 3 object(s)")
    follower.poll()
    follower.poll()
    assert [line[10:] for line in out.getvalue().splitlines()[1:]] == [
        "rejected   push-2  push  gs://x: bad",  # the line finished in a later write
        "succeeded  push-1  push  sent 3 object(s)",
    ]


@pytest.mark.integration
def test_the_readmes_gcloud_cancel_reaches_the_emulator_with_the_printed_exports(tmp_path: Path):
    """docs/operations.md's `gcloud pubsub topics publish ... --attribute=action=cancel,...`, as written, in a shell
    that ran `make up`'s exports: the real gcloud, the real emulator, the message Relay's function would read."""
    sdk_root()
    missing = emulator_available()
    if missing:
        pytest.fail(f"the integration tests need the Pub/Sub emulator: {missing}")
    [command] = [line.strip() for line in OPERATIONS.read_text().splitlines() if "gcloud pubsub topics publish" in line]
    with PubSubEmulator(tmp_path / "pubsub", project="relay-local") as emulator, offline_config() as isolated:
        topic = create_topic(emulator.host_port, "relay-local", "relay-triggers")
        subscription = subscription_path("relay-local", "readme-pull")
        with subscriber_client(emulator.host_port) as subscriber:
            subscriber.create_subscription(name=subscription, topic=topic)
        # Only the throwaway configuration: its loopback proxy and its project would hide what the exports do.
        env = {
            k: v for k, v in isolated.items() if not k.startswith("CLOUDSDK_PROXY_") and k != "CLOUDSDK_CORE_PROJECT"
        }
        exports = shell_exports({"PUBSUB_EMULATOR_HOST": emulator.host_port}, emulator.host_port, "relay-local")
        lines = shell_lines(tmp_path, Path(sys.executable).parent, exports)
        sent = subprocess.run(
            ["bash", "--norc", "-c", "\n".join([*lines, command])], capture_output=True, text=True, env=env, timeout=120
        )
        assert sent.returncode == 0, sent.stderr
        with subscriber_client(emulator.host_port) as subscriber:
            pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
        [received] = pulled.received_messages
        assert dict(received.message.attributes) == {"action": "cancel", "run_key": "nightly-2026-11-21"}


def test_cancels_reruns_and_ends_no_function_logged_are_shown_once_from_the_published_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLUMNS", "120")  # the lines are cut to the terminal's width: xdist's workers say 80
    log = tmp_path / "function-on_message_published.log"
    launched = {"outcome": "launched", "run_key": "push-1", "run_id": "local-1", "pipeline": "push", "trigger_uri": "t"}
    log.write_text(json.dumps(launched) + "\n")
    published: list[dict[str, object]] = []
    states: dict[str, tuple[str, str]] = {}
    out = io.StringIO()

    def records() -> list[dict[str, object]]:
        taken = list(published)
        published.clear()
        return taken

    follower = EventFollower([log], states.get, out, Paint(False), records)
    follower.poll()
    # `relay cancel` and `relay rerun` write records and publish them; no function logs a line for either.
    cancelled = {"state": "cancelled", "run_key": "push-1", "pipeline": "push", "message": "cancelled by relay cancel"}
    rerun = {
        "state": "launched",
        "run_key": "push-1-attempt-2",
        "pipeline": "push",
        "run_id": "local-2",
        "trigger": {"via": "rerun", "requested_by": "relay rerun", "previous_attempt": "push-1"},
    }
    published += [cancelled, rerun]
    states["push-1"] = ("cancelled", "cancelled by relay cancel")  # the records say so too: shown once all the same
    follower.poll()
    published.append({"state": "succeeded", "run_key": "push-1-attempt-2", "pipeline": "push", "message": "sent 3"})
    states["push-1-attempt-2"] = ("succeeded", "sent 3")
    follower.poll()
    follower.poll()
    assert [line[10:] for line in out.getvalue().splitlines()] == [
        "launched   push-1  push  t -> run local-1",
        "cancelled  push-1  push  cancelled by relay cancel",
        "rerun      push-1-attempt-2  push  rerun of push-1 by relay rerun -> run local-2",
        "succeeded  push-1-attempt-2  push  sent 3",
    ]


def test_a_second_make_up_on_the_same_folder_is_refused_and_make_down_stops_the_first(tmp_path: Path):
    pid_file = tmp_path / "up" / "make-up.pid"
    # A stand-in whose command line reads as `make up`'s, that ends on SIGTERM as `make up` does.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "devstack.up"])
    try:
        pid_file.parent.mkdir()
        pid_file.write_text(f"{holder.pid}\n")
        while pidfile.running(pid_file) is None:  # until the child has exec'd: before, it reads as pytest
            assert holder.poll() is None
        with pytest.raises(pidfile.StackRunningError) as refused:
            pidfile.claim(pid_file)
        assert f"another `make up` (pid {holder.pid}) uses {pid_file.parent}" in str(refused.value)
        assert pidfile.stop(pid_file, timeout=10) == holder.pid
        assert holder.wait(timeout=5) != 0
    finally:
        holder.kill()
    assert pidfile.stop(pid_file, timeout=10) is None  # nothing runs: nothing to stop
    pid_file.write_text(f"{os.getpid()}\n")  # a pid reused by another program is not `make up`
    assert pidfile.running(pid_file) is None
    pidfile.claim(pid_file)
    assert pid_file.read_text() == f"{os.getpid()}\n"
