"""The policy in `relay validate`, `trigger`, `publish` and `status`: the functions' own verdicts and run keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay import naming
from relay.adapters.routing import RoutingBlobStore
from relay.config import DEFAULT_CATALOG
from relay.events import EventInfo, InlineDelivery
from relay.outcome import Outcome
from relay.service import Relay, handle_delivery
from tests.cli.support import Ran, drop, relay_on, run

WORKFLOW_FOLDER = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "ratchet"
POLICY = f"""\
version: 1
project: lab-project
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/lab-project/topics/assay-triggers]
    sources: [gs://lab-data/assay/]
    destinations:
      - {{id: kaggle-lab, kind: kaggle, owner: lab}}
    secrets:
      - {{secret: secret://kaggle-key, to: kaggle-lab, field: key}}
    clusters: [{{id: here, kind: local}}]
    code: ["{WORKFLOW_FOLDER.as_uri()}/"]
  - name: chem
    triggers: [gs://triggers/chem/]
    sources: [gs://lab-data/chem/]
"""
README_TRIGGER: dict[str, Any] = {  # the README's example trigger
    "pipeline": "push",
    "parameters": {
        "sources": ["gs://lab-data/assay/2026-11-21/"],
        "destination": {"kind": "kaggle", "dataset": "lab/assay", "key": "secret://kaggle-key"},
    },
    "run_key": "nightly-2026-11-21",
    "labels": {"team": "assay"},
}
TOPIC = "projects/lab-project/topics/assay-triggers"


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def env(results: str, policy_file: str) -> dict[str, str]:
    """The functions' settings: the repo's catalog (push, ratchet), the policy, the local backend by default."""
    return {"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(DEFAULT_CATALOG), "RELAY_POLICY_URI": policy_file}


@pytest.fixture
def relay_cli(capsys: pytest.CaptureFixture[str], blobs: RoutingBlobStore, env: dict[str, str]) -> Callable[..., Ran]:
    def relay_command(*argv: str, **more: str) -> Ran:
        return run(capsys, list(argv), env={**env, **more}, store=blobs)

    return relay_command


@pytest.fixture
def relay(blobs: RoutingBlobStore, results: str, policy_file: str) -> Relay:
    """The real service, configured as `env` is."""
    return relay_on(blobs, results, catalog=str(DEFAULT_CATALOG), policy_uri=policy_file)


def write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def publish(relay: Relay, document: object, topic: str = TOPIC, message_id: str = "m-1") -> Outcome:
    event = EventInfo(
        id=message_id, type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=relay.clock()
    )
    data = json.dumps(document).encode()
    return handle_delivery(relay, InlineDelivery(event, topic, message_id, data, "json"))


def rejection(relay: Relay, outcome: Outcome) -> dict[str, Any]:
    assert outcome.run_key is not None
    record = relay.store.read(naming.rejection_record(relay.settings.results_uri, outcome.run_key)).data
    error: dict[str, Any] = json.loads(record)["error"]
    return error


# -- relay validate ---------------------------------------------------------------------------------------


def test_a_trigger_its_tenant_allows(relay_cli: Callable[..., Ran], tmp_path: Path, policy_file: str):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("validate", path, "--bucket", "triggers", "--name", "assay/nightly.json")
    assert (ran.code, ran.err) == (0, "")
    assert ran.out.splitlines() == [
        "valid: push with 2 parameters",
        f"policy   {policy_file}",
        "tenant   assay",
        "run key  assay--nightly-2026-11-21",  # its own key, in its tenant's namespace
        "",
        f"send it: relay trigger {path} --bucket triggers --name assay/nightly.json",  # the next command
    ]


def test_another_tenants_trigger_is_refused_item_by_item(
    relay_cli: Callable[..., Ran], relay: Relay, tmp_path: Path, policy_file: str
):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("validate", path, "--bucket", "gs://triggers", "--name", "chem/nightly.json", "--json")
    assert ran.code == 1 and ran.err == ""
    shown = ran.json()
    assert (shown["valid"], shown["code"]) == (False, "policy_denied")
    assert [p["field"] for p in shown["problems"]] == [
        "parameters.sources[0]",
        "parameters.destination",
        "parameters.destination.key",
    ]
    assert shown["problems"][0] == {
        "field": "parameters.sources[0]",
        "expected": "a source location under tenants.chem.sources (gs://lab-data/chem/)",
        "found": "'gs://lab-data/assay/2026-11-21/'",
    }
    assert shown["policy"] == {
        "source": policy_file,
        "origin": "gs://triggers/chem/nightly.json",
        "tenant": "chem",
        "run_key": "chem--nightly-2026-11-21",
    }
    # The functions refuse the same file, from the same place, for the very same reasons.
    refused = drop(relay, json.dumps(README_TRIGGER).encode(), "chem/nightly.json")
    assert refused.outcome == "rejected" and refused.run_key == "chem--nightly-2026-11-21"
    assert rejection(relay, refused) == {**rejection(relay, refused), "code": "policy_denied"}
    assert rejection(relay, refused)["problems"] == shown["problems"]


def test_a_trigger_from_where_no_tenant_takes_them(relay_cli: Callable[..., Ran], relay: Relay, tmp_path: Path):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("validate", path, "--bucket", "triggers")  # at the bucket's root: no tenant's prefix
    assert ran.code == 1
    lines = ran.out.splitlines()
    assert lines[:2] == [
        "invalid: 1 problem (policy_denied)",
        "  (origin): expected a trigger location or topic of a tenant (gs://triggers/assay/, "
        f"{TOPIC}, gs://triggers/chem/), found gs://triggers/nightly.json",
    ]
    # Its own run key is never used, so that it cannot take a tenant's: it is filed under a digest.
    assert lines[3:] == [
        "tenant   none: no tenant takes triggers from gs://triggers/nightly.json",
        "run key  trigger-<digest of the object and its generation>",
    ]
    refused = drop(relay, json.dumps(README_TRIGGER).encode(), "nightly.json")
    assert refused.run_key is not None and refused.run_key.startswith("trigger-")
    assert [p["field"] for p in rejection(relay, refused)["problems"]] == ["(origin)"]
    # Refused before it is read: what is in it does not matter.
    broken = relay_cli("validate", write(tmp_path, "broken.json", {"pipeline": 3}), "--bucket", "triggers")
    assert broken.out.splitlines()[0] == "invalid: 1 problem (policy_denied)"


def test_a_message_speaks_for_the_tenant_of_its_topic(
    relay_cli: Callable[..., Ran], relay: Relay, tmp_path: Path, policy_file: str
):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("validate", path, "--topic", "assay-triggers", "--project", "lab-project")
    assert ran.code == 0 and ran.out.splitlines()[1:] == [
        f"policy   {policy_file}",
        "tenant   assay",
        "run key  assay--nightly-2026-11-21",
        "",
        f"send it: relay publish {path} --topic projects/lab-project/topics/assay-triggers",
    ]
    assert publish(relay, README_TRIGGER).run_key == "assay--nightly-2026-11-21"
    elsewhere = relay_cli("validate", path, "--topic", "projects/lab-project/topics/other")
    assert elsewhere.code == 1 and "  (origin): expected a trigger location or topic of a tenant" in elsewhere.out


def test_a_derived_run_key_is_named_for_what_it_is_a_digest_of(relay_cli: Callable[..., Ran], tmp_path: Path):
    document = {key: value for key, value in README_TRIGGER.items() if key != "run_key"}
    path = write(tmp_path, "t.json", document)
    by_topic = relay_cli("validate", path, "--topic", TOPIC)
    assert (
        by_topic.out.splitlines()[-3]
        == "run key  push-<digest of the topic, the message id and its nonce or publish time>"
    )
    shown = relay_cli("validate", path, "--bucket", "triggers", "--name", "assay/t.json", "--json").json()
    assert shown["policy"]["run_key"] is None  # known once the object has a generation


def test_a_run_key_too_long_for_its_tenant(relay_cli: Callable[..., Ran], relay: Relay, tmp_path: Path):
    document = {**README_TRIGGER, "run_key": "n" * 127}
    path = write(tmp_path, "long.json", document)
    ran = relay_cli("validate", path, "--bucket", "triggers", "--name", "assay/long.json")
    assert ran.code == 1
    assert "  run_key: expected at most 120 characters in this tenant, found 127" in ran.out.splitlines()
    refused = drop(relay, json.dumps(document).encode(), "assay/long.json")
    assert rejection(relay, refused)["problems"][-1]["field"] == "run_key"


def test_without_a_policy_nothing_outside_relay_is_allowed(
    capsys: pytest.CaptureFixture[str], blobs: RoutingBlobStore, results: str, tmp_path: Path
):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    env = {"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(DEFAULT_CATALOG)}  # and the catalog has none
    ran = run(capsys, ["validate", path, "--bucket", "triggers", "--name", "assay/n.json"], env=env, store=blobs)
    assert ran.code == 1
    assert ran.out.splitlines()[0] == "invalid: 3 problems (policy_denied)"
    assert ran.out.splitlines()[-3:] == [
        "policy   none: no tenant, so no source, destination, secret, cluster or code location is allowed",
        "tenant   none",
        "run key  nightly-2026-11-21",
    ]


@pytest.mark.parametrize(("backend", "code"), [("local", 0), ("vertex", 1)])
def test_file_locations_only_with_the_local_backend(
    relay_cli: Callable[..., Ran], tmp_path: Path, backend: str, code: int
):
    document = {
        "pipeline": "ratchet",
        "parameters": {"workflow": {"uri": (WORKFLOW_FOLDER / "workflow.json").as_uri()}},
    }
    path = write(tmp_path, "ratchet.json", document)
    ran = relay_cli("validate", path, "--bucket", "triggers", "--name", "assay/r.json", RELAY_BACKEND=backend)
    assert ran.code == code, ran.out
    if code:
        assert "  parameters.workflow: expected a gs:// or s3:// code location (file:// only with the local" in ran.out


def test_the_policy_flag_wins_over_the_environment(relay_cli: Callable[..., Ran], tmp_path: Path):
    other = tmp_path / "other.yaml"
    other.write_text("version: 1\ntenants:\n  - {name: chem, triggers: ['gs://triggers/assay/']}\n")
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("validate", path, "--bucket", "triggers", "--name", "assay/n.json", "--policy", str(other))
    assert ran.code == 1 and "tenant   chem" in ran.out.splitlines()


def test_a_policy_that_cannot_be_used_is_a_configuration_error(relay_cli: Callable[..., Ran], tmp_path: Path):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    missing = relay_cli("validate", path, "--bucket", "triggers", "--policy", str(tmp_path / "none.yaml"))
    assert (missing.code, missing.out) == (2, "")
    assert missing.err == f"relay validate: --policy: expected a policy file, found none at {tmp_path}/none.yaml\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 2\ntenants: [{name: Lab}]\n")
    ran = relay_cli("validate", path, "--bucket", "triggers", RELAY_POLICY_URI=str(broken))
    assert (ran.code, ran.out) == (2, "")
    assert ran.err.splitlines() == [
        f"relay validate: RELAY_POLICY_URI: expected a valid policy at {broken}, found 2 problems",
        "  version: expected 1, found number 2",
        "  tenants[0].name: expected a tenant name matching [a-z][a-z0-9]{0,19}, found string 'Lab'",
    ]
    folder = relay_cli("validate", path, "--bucket", "triggers", "--policy", str(tmp_path))
    assert folder.code == 2 and folder.err.endswith(f"expected a policy file, found a folder {tmp_path}\n")


# -- relay validate --policy FILE -------------------------------------------------------------------------


def test_a_policy_file_alone(relay_cli: Callable[..., Ran], policy_file: str):
    ran = relay_cli("validate", "--policy", policy_file)
    assert (ran.code, ran.out, ran.err) == (0, "valid policy: 2 tenants (assay, chem)\n", "")


def test_every_problem_of_a_policy_file(relay_cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        POLICY.replace("name: chem", "name: assay")
        .replace("field: key", "field: token")
        .replace("[gs://lab-data/chem/]", "[http://lab-data/chem/]")
    )
    ran = relay_cli("validate", "--policy", str(path))
    assert ran.code == 1 and ran.err == ""
    assert ran.out.splitlines() == [
        "invalid policy: 3 problems",
        "  tenants.assay.sources[0]: expected a gs://bucket/prefix, s3://bucket/prefix or file:///folder location, "
        "found string 'http://lab-data/chem/'",
        "  tenants: the name 'assay' is used twice",
        "  tenants.assay.secrets: secret://kaggle-key fills 'token' of kaggle-lab, but a kaggle takes secrets only in: "
        "username, key",
    ]
    shown = relay_cli("validate", "--policy", str(path), "--json").json()
    assert shown == {
        "policy": str(path),
        "valid": False,
        "tenants": [],
        "problems": [line[2:] for line in ran.out.splitlines()[1:]],
    }


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ([], "relay validate: FILE: expected a trigger file to check (or --policy FILE alone, to check a policy)\n"),
        (["--policy", "p.yaml", "--bucket", "b"], "relay validate: FILE: expected the trigger file that would come"),
        (["t.json", "--name", "a/t.json"], "relay validate: --name: expected it with --bucket"),
        (["t.json", "--project", "lab"], "relay validate: --project: expected it with --topic"),
        (["t.json", "--bucket", "b1x", "--topic", "t1x"], "relay validate: argument --topic: not allowed with"),
        (["t.json", "--bucket", "gs://b1x/folder"], "relay validate: --bucket: expected a bucket name alone"),
        (["--policy", "none.yaml"], "relay validate: --policy: expected a policy file, found none at none.yaml\n"),
    ],
)
def test_usage_errors(relay_cli: Callable[..., Ran], tmp_path: Path, monkeypatch, argv: list[str], error: str):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "t.json", README_TRIGGER)
    ran = relay_cli("validate", *argv)
    assert ran.code == 2 and ran.out == ""
    assert ran.err.startswith(error) and ran.err.count("\n") == 1


# -- relay trigger, relay publish --------------------------------------------------------------------------


def test_trigger_prints_the_run_key_the_functions_give(relay_cli: Callable[..., Ran], relay: Relay, tmp_path: Path):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    shown = relay_cli("trigger", path, "--bucket", "triggers", "--name", "assay/nightly.json", "--json").json()
    assert shown["run_key"] == "assay--nightly-2026-11-21"
    delivered = drop(relay, json.dumps(README_TRIGGER).encode(), "assay/nightly.json")
    assert (delivered.outcome, delivered.run_key) == ("launched", shown["run_key"])


def test_trigger_refuses_to_upload_what_the_policy_denies(
    relay_cli: Callable[..., Ran], blobs: RoutingBlobStore, relay: Relay, tmp_path: Path
):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("trigger", path, "--bucket", "triggers", "--name", "chem/nightly.json")
    assert ran.code == 1 and ran.out == ""
    assert ran.err.splitlines()[0] == f"relay trigger: {path}: not uploaded: invalid: 3 problems (policy_denied)"
    assert list(blobs.list("gs://triggers/")) == []
    # --no-validate sends it all the same, and names the key its rejection is filed under.
    sent = relay_cli("trigger", path, "--bucket", "triggers", "--name", "nightly.json", "--no-validate", "--json")
    assert sent.code == 0 and sent.json()["run_key"].startswith("trigger-")
    event = EventInfo("e1", "google.cloud.storage.object.v1.finalized", "s", relay.clock())
    from relay.events import ObjectDelivery

    delivery = ObjectDelivery(event, "triggers", "nightly.json", sent.json()["generation"], None, "storage-event")
    outcome = handle_delivery(relay, delivery)
    assert (outcome.outcome, outcome.run_key) == ("rejected", sent.json()["run_key"])


def test_publish_refuses_to_send_what_the_policy_denies(relay_cli: Callable[..., Ran], tmp_path: Path):
    path = write(tmp_path, "nightly.json", README_TRIGGER)
    ran = relay_cli("publish", path, "--topic", "projects/lab-project/topics/other")
    assert ran.code == 1 and ran.out == ""
    assert ran.err.splitlines() == [
        f"relay publish: {path}: not published: invalid: 1 problem (policy_denied)",
        "  (origin): expected a trigger location or topic of a tenant (gs://triggers/assay/, "
        f"{TOPIC}, gs://triggers/chem/), found projects/lab-project/topics/other",
    ]


# -- relay status ------------------------------------------------------------------------------------------


def test_status_finds_a_run_key_in_the_one_tenant_that_has_it(relay_cli: Callable[..., Ran], relay: Relay):
    drop(relay, json.dumps(README_TRIGGER).encode(), "assay/nightly.json")
    for given in ("nightly-2026-11-21", "assay--nightly-2026-11-21", "gs://triggers/assay/nightly.json"):
        ran = relay_cli("status", given, "--json")
        assert (ran.code, ran.err) == (0, "")
        assert (ran.json()["run_key"], ran.json()["state"]) == ("assay--nightly-2026-11-21", "launched")
    missing = relay_cli("status", "nightly-2026-11-22")
    assert missing.code == 1 and "nightly-2026-11-22: expected records under" in missing.err


def test_status_names_every_tenant_when_several_have_the_key(relay_cli: Callable[..., Ran], relay: Relay):
    drop(relay, json.dumps(README_TRIGGER).encode(), "assay/nightly.json")
    drop(relay, json.dumps(README_TRIGGER).encode(), "chem/nightly.json")  # rejected, but filed under its key
    ran = relay_cli("status", "nightly-2026-11-21")
    assert (ran.code, ran.out) == (2, "")
    assert ran.err == (
        "relay status: RUN: nightly-2026-11-21 is the run key of more than one tenant's run; name one in full: "
        "assay--nightly-2026-11-21, chem--nightly-2026-11-21\n"
    )
    assert relay_cli("status", "chem--nightly-2026-11-21", "--json").json()["state"] == "rejected"
