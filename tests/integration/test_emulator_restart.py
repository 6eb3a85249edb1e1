"""The Pub/Sub emulator numbers messages from 1 again after a restart; the records outlive it, and still every
inline message published after the restart makes a run of its own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalStack
from devstack.logs import outcome_lines
from tests.cli.support import ECHO, run
from tests.conftest import CATALOG
from tests.integration.conftest import PROJECT, TOPIC, relay_stack
from tests.integration.support import eventually, read_record
from tests.servers.kfp import KfpApiServer
from tests.servers.metadata import MetadataServer

pytestmark = pytest.mark.integration
TOPIC_PATH = f"projects/{PROJECT}/topics/{TOPIC}"


@pytest.fixture
def stack(
    tmp_path_factory: pytest.TempPathFactory, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalStack, KfpApiServer]]:
    with KfpApiServer(token_check=metadata.is_valid) as kfp:
        # No notify topic: the message ids the emulator hands out are then only the test's own, in order.
        env = {"RELAY_BACKEND": "kfp", "RELAY_KFP_HOST": kfp.url, "RELAY_NOTIFY_TOPIC": "", **metadata.env()}
        with relay_stack(tmp_path_factory.mktemp("emulator-restart"), env) as running:
            # `relay publish`, run in this process, sends to this stack's emulator and reads the same catalog.
            monkeypatch.setenv("PUBSUB_EMULATOR_HOST", running.pubsub_host)
            monkeypatch.setenv("PUBSUB_PROJECT_ID", PROJECT)
            monkeypatch.setenv("RELAY_CATALOG_URI", str(CATALOG))
            monkeypatch.delenv("RELAY_POLICY_URI", raising=False)
            yield running, kfp


def next_outcome(stack: LocalStack, message_id: str, seen: int) -> dict[str, Any]:
    """The outcome line of the delivery of message `message_id` that follows the `seen` before it."""
    uri = f"{TOPIC_PATH}#{message_id}"

    def probe() -> dict[str, Any] | None:
        lines = [line for line in outcome_lines(stack.message_published.process.log_path) if line["trigger_uri"] == uri]
        return lines[seen] if len(lines) > seen else None

    return eventually(probe, what=f"an outcome line for {uri}")


def publish_both(stack: LocalStack, capsys: pytest.CaptureFixture[str], path: Path, seen: int) -> list[str]:
    """One message by `relay publish` (its nonce), then one without a nonce (its publish time); their run keys."""
    ran = run(capsys, ["publish", str(path), "--topic", TOPIC, "--json"])
    assert ran.code == 0, ran.err
    shown = ran.json()
    by_cli = next_outcome(stack, shown["message_id"], seen)
    assert (by_cli["outcome"], by_cli["run_key"]) == ("launched", shown["run_key"]), by_cli
    plain_id = stack.publish(TOPIC, path.read_bytes(), {"source": "test"})
    plain = next_outcome(stack, plain_id, seen)
    assert plain["outcome"] == "launched", plain
    return [shown["message_id"], shown["run_key"], plain_id, plain["run_key"]]


def test_message_ids_handed_out_again_after_an_emulator_restart_make_new_runs(
    stack: tuple[LocalStack, KfpApiServer], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    running, kfp = stack
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(ECHO))
    cli_id, cli_key, plain_id, plain_key = publish_both(running, capsys, path, seen=0)
    port = running.pubsub_host
    running.restart_pubsub()  # only the emulator: the functions and the results bucket keep running
    assert running.pubsub_host == port
    cli_again, cli_key_again, plain_again, plain_key_again = publish_both(running, capsys, path, seen=1)
    assert (cli_again, plain_again) == (cli_id, plain_id)  # numbered from 1 again
    keys = [cli_key, plain_key, cli_key_again, plain_key_again]
    assert len(set(keys)) == 4 and sorted(run["display_name"] for run in kfp.runs) == sorted(keys)
    storage = running.storage_client()
    triggers = [(read_record(storage, f"runs/{key}/launch.json") or {}).get("trigger", {}) for key in keys]
    assert [trigger["message_id"] for trigger in triggers] == [cli_id, plain_id, cli_id, plain_id]
    stamps = [trigger["nonce_or_publish_time"] for trigger in triggers]
    assert all(re.fullmatch(r"[0-9a-f]{16}", stamps[i]) for i in (0, 2)), stamps  # relay publish's nonces
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", stamps[i]) for i in (1, 3)), stamps  # publish times
