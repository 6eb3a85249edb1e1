"""Malformed deliveries on the emulators, as an attacker who may publish would send them: each is answered once.

A push the function answers with a 500 is redelivered by the emulator (as by Pub/Sub and Eventarc) until the dead
letter; a body nested thousands of levels deep was one. A trigger whose parameter holds a lone surrogate went the
whole launch path (claim, local run, records, notification) before anything could refuse it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import LocalStack
from devstack.stack import GCS_EVENTS_TOPIC
from tests.integration.conftest import TOPIC, TRIGGERS, relay_stack
from tests.integration.support import eventually, outcome_lines, record_paths, wait_for_record

pytestmark = pytest.mark.integration
DEEP = 10_000  # levels: far past Python's recursion limit


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with relay_stack(tmp_path_factory.mktemp("hostile"), {"RELAY_BACKEND": "local"}) as running:
        yield running


def lines_of(stack: LocalStack, target: str, event_id: str) -> list[dict[str, Any]]:
    server = stack.object_finalized if target == "object_finalized" else stack.message_published
    return [line for line in outcome_lines(server.process.log_path) if line["event_id"] == event_id]


def test_a_notification_nested_past_the_parser_is_acknowledged_once(stack: LocalStack):
    # Published where the bucket's notifications go: the bridge hands its body to the function as the event's data.
    attributes = {
        "payloadFormat": "JSON_API_V1",
        "eventType": "OBJECT_FINALIZE",
        "bucketId": TRIGGERS,
        "objectId": "deep/echo.json",
        "objectGeneration": "1",
        "eventTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    event_id = stack.publish(GCS_EVENTS_TOPIC, b"[" * DEEP + b"]" * DEEP, attributes)
    [line] = eventually(lambda: lines_of(stack, "object_finalized", event_id) or None, 20.0, "an outcome line")
    assert (line["outcome"], line["severity"]) == ("skipped", "ERROR")
    assert line["message"] == "expected an event of at most 64 levels of lists and mappings, found more"
    time.sleep(3.0)  # the emulator redelivers what was not acknowledged within about a second
    assert len(lines_of(stack, "object_finalized", event_id)) == 1


def publish_and_wait(stack: LocalStack, document: bytes) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    message_id = stack.publish(TOPIC, document, {"sender": "attacker"})
    [line] = eventually(lambda: lines_of(stack, "message_published", message_id) or None, 20.0, "an outcome line")
    return line, time.monotonic() - started


def test_a_trigger_holding_a_lone_surrogate_is_rejected_without_a_run(stack: LocalStack, capsys: Any):
    trigger = b'{"pipeline": "echo", "parameters": {"message": "%s"}}'
    first, cold = publish_and_wait(stack, trigger % b"first")  # the instance's first event builds its clients
    line, elapsed = publish_and_wait(stack, trigger % b"\\ud800")
    assert (first["outcome"], line["outcome"], line.get("code")) == ("launched", "rejected", "invalid_trigger"), line
    assert line["message"].endswith(
        "parameters.message: expected UTF-8 text (a lone surrogate such as \\ud800 has none), found string '\\ud800'"
    )
    record = wait_for_record(stack.storage_client(), f"rejected/{line['run_key']}.json", "rejected")
    assert record["error"]["problems"][0]["field"] == "parameters.message"
    assert not [path for path in record_paths(stack.storage_client(), "runs/") if line["run_key"] in path]
    launched, warm = publish_and_wait(stack, trigger % b"second")
    assert launched["outcome"] == "launched", launched
    with capsys.disabled():  # for the report: no bound is asserted, the timing is the machine's
        print(f"\npublish to outcome line: first launch {cold:.3f} s, rejection {elapsed:.3f} s, launch {warm:.3f} s")
