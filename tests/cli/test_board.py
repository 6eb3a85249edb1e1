"""`relay board`: the page written from the results location, for everyone or one tenant, with the dead letters read
from the Pub/Sub emulator as `relay dead-letters list` reads them (none consumed), or why they could not be."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack import PubSubEmulator, create_topic
from devstack.pubsub import create_push_subscription, publish, subscriber_client, subscription_path
from devstack.stack import DEAD_LETTER
from relay.adapters.routing import RoutingBlobStore
from tests.cli.support import Ran, run
from tests.unit.board_support import HOSTILE, seed

PROJECT = "relay-local"
NOW = datetime.now(UTC)


@pytest.fixture
def seeded(blobs: RoutingBlobStore, results: str) -> str:
    seed(blobs, results, NOW)
    return results


def test_the_board_of_every_tenant_is_written_to_the_file_named(cli: Callable[..., Ran], seeded: str, tmp_path: Path):
    out = tmp_path / "board.html"
    ran = cli("board", "--out", str(out), "--no-dead-letters", "--name", "lab-prod")
    assert ran.code == 0 and ran.err == ""
    assert ran.out == f"wrote {out} (every tenant: 7 in flight, 2 queued, 5 rejected)\n"
    page = out.read_text()
    assert "<code>lab-prod</code>" in page and "assay-rejected-0" in page and "imaging-rejected-0" in page
    assert "Not read (--no-dead-letters)." in page and HOSTILE not in page


def test_a_tenants_board_shows_its_own_runs_only(cli: Callable[..., Ran], seeded: str, tmp_path: Path):
    out = tmp_path / "imaging.html"
    ran = cli("board", "--out", str(out), "--tenant", "imaging")
    assert ran.code == 0 and ran.out == f"wrote {out} (tenant imaging: 1 in flight, 0 queued, 1 rejected)\n"
    page = out.read_text()
    assert "imaging-rejected-0" in page and "assay" not in page and "legacy" not in page
    assert 'id="dead-letters"' not in page
    assert f"<code>{seeded}</code>" in page  # without --name or RELAY_DEPLOYMENT_NAME: the results location


def test_dead_letters_that_cannot_be_read_leave_a_note_and_the_page_is_written(
    cli: Callable[..., Ran], seeded: str, tmp_path: Path
):
    out = tmp_path / "board.html"
    ran = cli("board", "--out", str(out))  # no project: a short subscription name cannot be resolved
    assert ran.code == 0, ran.err
    assert "Could not read relay-dead-letter: --project: expected the project of subscription" in out.read_text()


def test_a_file_that_cannot_be_written_is_a_failure_that_says_which(cli: Callable[..., Ran], seeded: str, tmp_path):
    ran = cli("board", "--out", str(tmp_path / "no-such-folder" / "board.html"), "--no-dead-letters")
    assert ran.code == 1 and "--out: expected a file that can be written, found " in ran.err


@pytest.fixture
def dead_letters(emulator: PubSubEmulator) -> Iterator[str]:
    host = emulator.host_port
    create_topic(host, PROJECT, DEAD_LETTER)
    create_push_subscription(host, PROJECT, DEAD_LETTER, topic=DEAD_LETTER, endpoint="")
    yield host
    with subscriber_client(host) as client:
        client.delete_subscription(subscription=subscription_path(PROJECT, DEAD_LETTER))


@pytest.mark.integration
def test_the_board_lists_the_dead_letters_and_consumes_none(
    capsys: pytest.CaptureFixture[str], dead_letters: str, blobs: RoutingBlobStore, seeded: str, tmp_path: Path
):
    attributes = {"bucketId": "lab-data", "objectId": "assay/x.csv", "objectGeneration": "7"}
    message_id = publish(dead_letters, PROJECT, DEAD_LETTER, b"{}", attributes)
    env = {"RELAY_RESULTS_URI": seeded, "PUBSUB_EMULATOR_HOST": dead_letters, "PUBSUB_PROJECT_ID": PROJECT}
    for n in range(2):  # the second board sees what the first did: nothing was acknowledged
        out = tmp_path / f"board-{n}.html"
        ran = run(capsys, ["board", "--out", str(out)], env=env, store=blobs)
        assert ran.code == 0, ran.err
        page = out.read_text()
        assert message_id in page and "gs://lab-data/assay/x.csv#7" in page
