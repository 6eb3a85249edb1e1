"""The real chain on loopback: upload -> notification -> Pub/Sub push -> functions-framework -> KFP API -> records."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack import LocalStack
from devstack.bridge import cloud_event_from_push
from devstack.pubsub import subscriber_client, subscription_path, topic_path
from relay import naming, records
from tests.conftest import CATALOG
from tests.integration.conftest import NOTIFY, PROJECT, TOPIC, TRIGGERS, relay_stack
from tests.integration.support import (
    RESULTS,
    eventually,
    outcome_lines,
    read_record,
    record_paths,
    wait_for_outcome,
    wait_for_record,
)
from tests.servers.kfp import KfpApiServer
from tests.servers.metadata import MetadataServer

pytestmark = pytest.mark.integration
# No secret reference: without a policy none is allowed, and no policy binds one to echo (which has no destination).
# References passing through to the run untouched: tests/integration/test_push_chain.py.
ECHO = {"pipeline": "echo", "parameters": {"message": "from the bucket", "options": {"mode": "fast"}}}


@pytest.fixture(scope="module")
def kfp(metadata: MetadataServer) -> Iterator[KfpApiServer]:
    with KfpApiServer(token_check=metadata.is_valid) as server:
        yield server
    assert server.errors == []


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, kfp: KfpApiServer, metadata: MetadataServer
) -> Iterator[LocalStack]:
    env = {"RELAY_BACKEND": "kfp", "RELAY_KFP_HOST": kfp.url, "RELAY_CLAIM_LEASE": "3s", **metadata.env()}
    with relay_stack(tmp_path_factory.mktemp("kfp-chain"), env) as running:
        subscriber = subscriber_client(running.pubsub_host)
        subscriber.create_subscription(
            name=subscription_path(PROJECT, "notify-test"), topic=topic_path(PROJECT, NOTIFY)
        )
        yield running


@pytest.fixture(scope="module")
def storage(stack: LocalStack) -> Any:
    return stack.storage_client()


def upload(storage: Any, name: str, document: object) -> int:
    blob = storage.bucket(TRIGGERS).blob(name)
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    blob.upload_from_string(data, content_type="application/json")
    return int(blob.generation)


def object_key(name: str, generation: int, pipeline: str = "echo") -> str:
    return naming.derive_run_key(pipeline, naming.object_identity(TRIGGERS, name, generation))


def runs_named(kfp: KfpApiServer, run_key: str) -> list[dict[str, Any]]:
    return [run for run in kfp.runs if run["display_name"] == run_key]


def notifications(stack: LocalStack) -> list[tuple[dict[str, str], dict[str, Any]]]:
    subscriber = subscriber_client(stack.pubsub_host)
    response = subscriber.pull(subscription=subscription_path(PROJECT, "notify-test"), max_messages=50, timeout=5)
    if response.received_messages:
        subscriber.acknowledge(
            subscription=subscription_path(PROJECT, "notify-test"),
            ack_ids=[m.ack_id for m in response.received_messages],
        )
    return [(dict(m.message.attributes), json.loads(m.message.data)) for m in response.received_messages]


def test_an_upload_becomes_one_kfp_run_with_a_launch_record(stack: LocalStack, storage: Any, kfp: KfpApiServer):
    generation = upload(storage, "nightly/echo.json", ECHO)
    key = object_key("nightly/echo.json", generation)
    record = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    [run] = runs_named(kfp, key)
    assert record["run_id"] == run["run_id"] and record["run_url"] == f"{kfp.url}/#/runs/details/{run['run_id']}"
    assert record["trigger"]["uri"] == "gs://relay-triggers/nightly/echo.json"
    assert record["trigger"]["generation"] == generation and record["trigger"]["via"] == "storage-event"
    parameters = run["request_body"]["runtime_config"]["parameters"]
    assert parameters == {**ECHO["parameters"], "run_key": key, "results_uri": f"gs://{RESULTS}"}
    sent = eventually(lambda: [n for n in notifications(stack) if n[0]["run_key"] == key] or None, what="notification")
    assert sent[0][0] == {"run_key": key, "pipeline": "echo", "state": "launched"}
    line = wait_for_outcome(
        stack.object_finalized.process.log_path, "gs://relay-triggers/nightly/echo.json", "launched"
    )
    assert line["severity"] == "INFO" and line["run_id"] == run["run_id"] and line["run_key"] == key


def test_the_same_event_delivered_concurrently_through_both_paths_gives_one_run(
    stack: LocalStack, storage: Any, kfp: KfpApiServer
):
    name = "concurrent/echo.json"
    generation = upload(storage, name, ECHO)  # the bucket's own notification is one delivery
    key = object_key(name, generation)
    resource = {"bucket": TRIGGERS, "name": name, "generation": str(generation), "size": "10"}
    push = {
        "message": {
            "attributes": {
                "bucketId": TRIGGERS,
                "objectId": name,
                "objectGeneration": str(generation),
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
                "eventTime": datetime.now(UTC).isoformat(),
            },
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "messageId": "race-1",
        }
    }
    storage_event = cloud_event_from_push(json.loads(json.dumps(push)))
    assert storage_event is not None
    statuses: list[int] = []
    barrier = threading.Barrier(3)

    def deliver_like_eventarc() -> None:
        barrier.wait()
        # Eventarc redelivers until it gets a 2xx; a live claim answers 500 until the launch is recorded.
        for _ in range(100):
            response = requests.post(
                stack.object_finalized_url, headers=storage_event.headers(), data=storage_event.data
            )
            statuses.append(response.status_code)
            if response.ok:
                return
            time.sleep(0.1)

    threads = [threading.Thread(target=deliver_like_eventarc) for _ in range(3)]
    for thread in threads:
        thread.start()
    for attributes in (push["message"]["attributes"],) * 2:  # and twice through the topic, as a notification
        stack.publish(TOPIC, json.dumps(resource).encode(), attributes)
    for thread in threads:
        thread.join()
    wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    eventually(
        lambda: len([e for e in outcome_lines(stack.message_published.process.log_path) if e["run_key"] == key]) >= 2,
        what="both topic deliveries handled",
    )
    assert len(runs_named(kfp, key)) == 1
    assert 200 in statuses


def stale_claim(run_key: str) -> bytes:
    claim = records.claim_record(
        run_key=run_key,
        pipeline="echo",
        backend="kfp",
        trigger={"event_id": "crashed-instance"},
        parameters={},
        labels={},
        now=datetime.now(UTC) - timedelta(minutes=30),
        lease_seconds=60,
    )
    return records.encode(claim)


def test_a_crash_between_claim_and_submit_gives_one_run_after_redelivery(
    stack: LocalStack, storage: Any, kfp: KfpApiServer
):
    key = "crash-before-submit"
    storage.bucket(RESULTS).blob(f"runs/{key}/launch.json").upload_from_string(stale_claim(key), if_generation_match=0)
    upload(storage, "crash/before.json", {**ECHO, "run_key": key})
    record = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    [run] = runs_named(kfp, key)
    assert record["run_id"] == run["run_id"]


def test_a_crash_between_submit_and_record_never_gives_a_second_run(
    stack: LocalStack,
    storage: Any,
    kfp: KfpApiServer,
    metadata: MetadataServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    key = "crash-after-submit"
    # The crashed instance got as far as the submit: the run exists, the record still says launching.
    token = next(iter(metadata.valid_tokens()))  # one the functions already hold: fetching would skew the count
    experiment = next(e for e in kfp.experiments if e["display_name"] == "relay")
    spec = (CATALOG / "echo.yaml").read_text()
    created = requests.post(
        f"{kfp.url}/apis/v2beta1/runs",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "display_name": key,
            "experiment_id": experiment["experiment_id"],
            "pipeline_spec": yaml.safe_load(spec),
            "runtime_config": {"parameters": {"message": "first"}},
        },
        timeout=10,
    )
    assert created.ok, created.text
    storage.bucket(RESULTS).blob(f"runs/{key}/launch.json").upload_from_string(stale_claim(key), if_generation_match=0)
    upload(storage, "crash/after.json", {**ECHO, "run_key": key})
    record = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    assert len(runs_named(kfp, key)) == 1
    assert record["run_id"] == created.json()["run_id"]


def test_a_malformed_trigger_gives_one_rejection_record_and_no_run(stack: LocalStack, storage: Any, kfp: KfpApiServer):
    runs_before = len(kfp.runs)
    generation = upload(storage, "bad/echo.json", {"pipeline": "echo", "parameters": {"count": "three"}, "colour": 1})
    key = object_key("bad/echo.json", generation, pipeline="trigger")
    rejection = wait_for_record(storage, f"rejected/{key}.json", "rejected")
    assert rejection["status"] == 400 and rejection["error"]["code"] == "invalid_trigger"
    assert [p["field"] for p in rejection["error"]["problems"]] == ["colour"]
    # Redelivered through the topic by URI: still one record, still no run.
    stack.publish(TOPIC, b"", {"trigger_uri": f"gs://{TRIGGERS}/bad/echo.json#{generation}"})
    eventually(
        lambda: [e for e in outcome_lines(stack.message_published.process.log_path) if e["run_key"] == key] or None,
        what="the redelivery",
    )
    assert record_paths(storage, f"rejected/{key}") == [f"rejected/{key}.json"]
    assert len(kfp.runs) == runs_before


def test_parameters_are_checked_against_the_spec_before_anything_launches(
    stack: LocalStack, storage: Any, kfp: KfpApiServer
):
    generation = upload(storage, "bad/params.json", {"pipeline": "echo", "parameters": {"message": 3, "colour": "x"}})
    key = object_key("bad/params.json", generation)
    rejection = wait_for_record(storage, f"rejected/{key}.json", "rejected")
    assert rejection["error"]["code"] == "invalid_parameters"
    assert sorted(p["field"] for p in rejection["error"]["problems"]) == ["parameters.colour", "parameters.message"]
    assert runs_named(kfp, key) == [] and read_record(storage, f"runs/{key}/launch.json") is None


def test_empty_and_stray_objects_are_skipped_and_recorded_once(stack: LocalStack, storage: Any):
    """Both the bucket's own event and its notification deliver each object: one skip record per object version."""
    generations = {
        name: upload(storage, name, data) for name, data in (("uploading/echo.json", b""), ("notes.txt", ECHO))
    }
    empty = wait_for_outcome(
        stack.object_finalized.process.log_path, "gs://relay-triggers/uploading/echo.json", "skipped"
    )
    stray = wait_for_outcome(stack.object_finalized.process.log_path, "gs://relay-triggers/notes.txt", "skipped")
    assert "zero-byte" in empty["message"] and "does not end in .json" in stray["message"]
    for line, code in ((empty, records.SKIP_EMPTY), (stray, records.SKIP_NOT_A_TRIGGER)):
        name = line["trigger_uri"].removeprefix(f"gs://{TRIGGERS}/")
        key = object_key(name, generations[name], naming.UNKNOWN_PIPELINE)
        assert line["run_key"] == key
        record = wait_for_record(storage, f"runs/{key}/skipped.json", "skipped")
        assert (record["code"], record["trigger"]["generation"], record["tenant"]) == (code, generations[name], "")
        assert record_paths(storage, f"runs/{key}/") == [f"runs/{key}/skipped.json"]


def test_an_inline_message_on_the_topic_launches(stack: LocalStack, storage: Any, kfp: KfpApiServer):
    message_id = stack.publish(
        TOPIC, json.dumps({**ECHO, "labels": {"source": "scheduler"}}).encode(), {"from": "test", "nonce": "kfp-1"}
    )
    identity = naming.message_identity(f"projects/{PROJECT}/topics/{TOPIC}", message_id, "kfp-1")
    key = naming.derive_run_key("echo", identity)
    record = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    assert record["trigger"]["message_id"] == message_id and record["labels"] == {"source": "scheduler"}
    assert len(runs_named(kfp, key)) == 1


def test_tokens_are_cached_per_instance_and_refreshed_once_after_a_401(
    stack: LocalStack, storage: Any, kfp: KfpApiServer, metadata: MetadataServer
):
    fetched = metadata.token_fetches
    assert fetched <= 2  # one per function instance, whatever the number of events so far
    metadata.revoke_all()  # the KFP API now answers 401 to the cached tokens
    generation = upload(storage, "after-revoke/echo.json", ECHO)
    key = object_key("after-revoke/echo.json", generation)
    wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    assert metadata.token_fetches == fetched + 1 and len(runs_named(kfp, key)) == 1


def test_records_written_to_the_results_bucket_never_come_back_as_triggers(stack: LocalStack, storage: Any):
    upload(storage, "loop-check/echo.json", ECHO)
    wait_for_outcome(stack.object_finalized.process.log_path, "gs://relay-triggers/loop-check/echo.json", "launched")
    handled = {line["trigger_uri"] for line in outcome_lines(stack.object_finalized.process.log_path)}
    assert handled and all(uri.startswith(f"gs://{TRIGGERS}/") for uri in handled)
