"""`relay validate --object` from assay's side: it says what the functions would do with a storage notification of
the object arriving on a topic (refused where they refuse it, only the topic's tenant's routes, the object's facts
as storage has them), never what a notification's publisher, or a flag, would like it to say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relay import naming
from relay.adapters.routing import RoutingBlobStore
from relay.events import EventInfo, Message, ObjectDelivery
from relay.service import handle_delivery
from tests.cli.support import Ran, relay_on
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore

Cli = Callable[..., Ran]
ASSAY, IMAGING, NOBODY = (
    "projects/proj-lab/topics/assay",
    "projects/proj-lab/topics/imaging",
    "projects/proj-lab/topics/nobody",
)
POLICY = """
notifications:
  - {topic: projects/proj-lab/topics/assay, buckets: [lab-data]}
  - {topic: projects/proj-lab/topics/imaging, buckets: [scans, lab-data]}
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-lab/topics/assay]
    routes:
      - {id: csv, bucket: lab-data, prefix: assay/, glob: "*.csv", pipeline: echo,
         parameters: {message: "{name}", count: "{size}"}}
      - {id: plates, bucket: lab-data, prefix: plates/, pipeline: echo, set: {size: 24},
         parameters: {message: "{folder}", items: "{objects}"}}
  - name: imaging
    triggers: [gs://triggers/imaging/]
    topics: [projects/proj-lab/topics/imaging]
    routes:
      - {id: scans, bucket: scans, pipeline: echo,
         parameters: {message: "{metadata.destination}", options: {type: "{content_type}"}}}
"""
CSV, SCAN, EMPTY = "gs://lab-data/assay/x.csv", "gs://scans/a.tif", "gs://scans/empty.tif"


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def uploaded(gcs: MemoryBlobStore) -> dict[str, int]:
    """The data objects as Cloud Storage keeps them, and their generations."""
    return {
        CSV: gcs.put(CSV, b"a,b\n1,2\n", content_type="text/csv"),
        SCAN: gcs.put(SCAN, b"tiff", content_type="image/tiff", metadata={"destination": "gs://imaging-out/a/"}),
        EMPTY: gcs.put(EMPTY, b"", metadata={"destination": "gs://imaging-out/e/"}),
    }


def validate(cli: Cli, policy: str, uri: str, *flags: str) -> Ran:
    return cli("validate", "--object", uri, "--policy", policy, *flags)


def test_imagings_topic_naming_assays_data_finds_no_route_of_assays(cli: Cli, policy: str, uploaded: dict[str, int]):
    # lab-data's notifications reach imaging's topic too: what they name there is imaging's, and imaging has no
    # route on lab-data; assay's route is not imaging's to start.
    ran = validate(cli, policy, CSV, "--topic", IMAGING)
    assert ran.code == 1, ran.out + ran.err
    assert ran.out.startswith(f"no route: {CSV} would start nothing on {IMAGING} (tenant imaging; routes: imaging/")
    shown = validate(cli, policy, CSV, "--topic", IMAGING, "--json").json()
    assert (shown["tenant"], shown["route"], shown["valid"]) == ("imaging", None, False)
    assert shown["routes"] == ["imaging/scans (gs://scans/*)"]


def test_a_notification_on_a_topic_not_wired_to_its_bucket_is_refused(cli: Cli, policy: str, uploaded: dict[str, int]):
    ran = validate(cli, policy, SCAN, "--topic", ASSAY)
    assert ran.code == 1 and ran.out.startswith(f"refused: a notification of {SCAN} on {ASSAY} would be refused")
    assert "expected a notification of a bucket that notifications wires to this topic (lab-data)" in ran.out
    shown = validate(cli, policy, SCAN, "--topic", ASSAY, "--json").json()
    assert (shown["tenant"], shown["route"], shown["code"]) == ("assay", None, "policy_denied")
    nobody = validate(cli, policy, SCAN, "--topic", NOBODY, "--json").json()
    assert (nobody["tenant"], nobody["code"]) == (None, "policy_denied")
    assert nobody["problems"][0]["found"] == NOBODY


def test_a_routes_facts_are_storages_never_the_flags(cli: Cli, policy: str, uploaded: dict[str, int]):
    ran = validate(cli, policy, SCAN, "--json")
    assert ran.code == 0, ran.out + ran.err
    shown = ran.json()
    assert (shown["topic"], shown["route"], shown["what_if"]) == (IMAGING, "imaging/scans", False)
    assert shown["parameters"] == {"message": "gs://imaging-out/a/", "options": {"type": "image/tiff"}}
    assert shown["run_key"] == naming.derive_run_key("echo", naming.object_identity("scans", "a.tif", uploaded[SCAN]))
    assert "from storage" in validate(cli, policy, SCAN).out
    # A flag cannot stand in for what storage says of an object that is there.
    chosen = validate(cli, policy, SCAN, "--metadata", "destination=gs://imaging-out/elsewhere/")
    assert chosen.code == 2 and "expected them only for an object not in storage (a what-if)" in chosen.err
    assert validate(cli, policy, SCAN, "--content-type", "text/plain").code == 2


def test_an_object_not_in_storage_is_a_what_if_and_says_so(cli: Cli, policy: str, uploaded: dict[str, int]):
    flags = ("--metadata", "destination=gs://imaging-out/n/", "--content-type", "image/png")
    ran = validate(cli, policy, "gs://scans/new.tif", *flags)
    assert ran.code == 0, ran.out + ran.err
    assert "what-if: the object is not in storage; --metadata, --content-type as given" in ran.out
    shown = validate(cli, policy, "gs://scans/new.tif", *flags, "--json").json()
    assert shown["what_if"] is True and shown["run_key"] is None
    assert shown["parameters"] == {"message": "gs://imaging-out/n/", "options": {"type": "image/png"}}
    # At a generation storage does not have, the object is not there either: the flags are a what-if again.
    other = validate(cli, policy, f"{SCAN}#{uploaded[SCAN] + 1}", *flags, "--json").json()
    assert other["what_if"] is True and other["parameters"]["message"] == "gs://imaging-out/n/"


def test_the_topic_defaults_to_the_one_the_policy_wires_to_the_bucket(cli: Cli, policy: str, uploaded: dict[str, int]):
    assert validate(cli, policy, SCAN, "--json").json()["topic"] == IMAGING
    both = validate(cli, policy, CSV)
    assert both.code == 2 and f"lab-data to 2 topics ({ASSAY}, {IMAGING})" in both.err
    nowhere = validate(cli, policy, "gs://elsewhere/x.csv")
    assert nowhere.code == 2 and "wires elsewhere to no topic" in nowhere.err
    short = cli(
        "validate", "--object", SCAN, "--policy", policy, "--topic", "imaging", "--project", "proj-lab", "--json"
    )
    assert short.json()["topic"] == IMAGING
    assert cli("validate", "--object", SCAN, "--bucket", "scans").code == 2


@pytest.mark.parametrize(
    ("uri", "topic"),
    [(CSV, ASSAY), (CSV, IMAGING), (SCAN, IMAGING), (SCAN, ASSAY), (SCAN, NOBODY), (EMPTY, IMAGING)],
)
def test_it_says_what_the_functions_do_with_the_notification(
    cli: Cli, policy: str, uploaded: dict[str, int], blobs: RoutingBlobStore, results: str, uri: str, topic: str
):
    generation = uploaded[uri]
    shown = validate(cli, policy, f"{uri}#{generation}", "--topic", topic, "--json")
    relay = relay_on(blobs, results, at=NOW, policy_uri=policy)
    bucket, name = naming.split_gs_uri(uri)
    event = EventInfo(id="m-1", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW)
    notified = ObjectDelivery(event, bucket, name, generation, None, "storage-notification", Message(topic, "m-1"))
    outcome = handle_delivery(relay, notified)
    assert (shown.code == 0) == (outcome.outcome == "launched"), (shown.out, outcome)
    if outcome.outcome == "launched":
        assert isinstance(relay.backend, FakeBackend)
        [launched] = relay.backend.launches
        assert shown.json()["run_key"] == outcome.run_key
        assert {k: v for k, v in launched.parameters.items() if k not in ("run_key", "results_uri")} == (
            shown.json()["parameters"]
        )


def test_an_object_a_set_route_takes_would_join_its_folders_set(cli: Cli, policy: str, uploaded: dict[str, int]):
    ran = validate(cli, policy, "gs://lab-data/plates/p1/a01.csv", "--topic", ASSAY)
    assert ran.code == 0, ran.err
    assert "would join the open set of gs://lab-data/plates/p1/ (route assay/plates, pipeline echo)" in ran.out
