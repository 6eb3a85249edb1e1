"""Malformed triggers and envelopes, sent as an attacker would, through functions-framework's real app.

Whatever arrives, the answer acknowledges it (Pub/Sub push and Eventarc take only 102, 200, 201, 202 and 204 as
done; anything else, a 400 included, is redelivered until the dead letter), one outcome line says what became of
it, a trigger's own mistake leaves one rejection record, and neither names a location of Relay's own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from functions_framework import create_app

from relay import records, runtime
from relay.service import Relay
from relay.triggers import MAX_TRIGGER_BYTES
from tests.fakes import FakeBackend, MemoryBlobStore

MAIN = Path(__file__).parents[2] / "functions" / "main.py"
SOURCE = "//pubsub.googleapis.com/projects/relay-demo/topics/relay-triggers"
PUBLISHED = {
    "ce-id": "9921345002400",
    "ce-specversion": "1.0",
    "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
    "ce-source": SOURCE,
    "ce-time": "2026-11-21T11:59:59.000Z",
    "Content-Type": "application/json",
}
FINALIZED = {
    **PUBLISHED,
    "ce-type": "google.cloud.storage.object.v1.finalized",
    "ce-source": "//storage.googleapis.com/projects/_/buckets/relay-triggers",
}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}
PLAIN = {"Content-Type": "application/json"}  # a raw Pub/Sub push, which the framework converts
# Where a push subscription delivers: functions-framework names the topic in the event's source from this path.
PUSH_PATH = "/projects/relay-demo/topics/relay-triggers"
RELAYS_OWN = ("gs://catalog", "gs://results")  # the fixture's catalog and results locations
DEEP = 100_000  # levels: far past Python's recursion limit


@dataclass(frozen=True)
class Hostile:
    """One request and what must become of it: `outcome` in the one line; `code` for a rejection record."""

    target: str
    headers: dict[str, str]
    body: bytes
    outcome: str
    code: str | None = None
    says: str = ""  # a fragment of the outcome line's message


def push(document: bytes, attributes: dict[str, str] | None = None, **message: Any) -> bytes:
    """A Pub/Sub push body as a push subscription sends it: the trigger document base64-encoded in the message."""
    fields = {"data": base64.b64encode(document).decode(), "attributes": attributes or {"sender": "x"}, **message}
    return json.dumps({"subscription": "s", "message": {"messageId": "77", **fields}}).encode()


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


TRIGGER = b'{"pipeline": "echo", "parameters": {"message": "%s"}}'
READABLE = "expected a CloudEvent or a Pub/Sub push that functions-framework can read"
TOO_DEEP = "expected an event of at most 64 levels of lists and mappings"
FILL = (MAX_TRIGGER_BYTES - 100) // 4

CASES = {
    # The framework itself cannot read these: before, a 500 (or a 400), redelivered until the dead letter.
    "deep-binary-body": Hostile("on_message_published", PUBLISHED, nested(DEEP), "skipped", says=TOO_DEEP),
    "deep-structured-body": Hostile(
        "on_message_published", STRUCTURED, b'{"specversion": "1.0", "data": ' + nested(DEEP) + b"}", "skipped"
    ),
    "deep-raw-push": Hostile(
        "on_message_published",
        PLAIN,
        b'{"subscription": "s", "message": {"messageId": "1", "data": "", "attributes": ' + nested(DEEP) + b"}}",
        "skipped",
        says=TOO_DEEP,
    ),
    "deep-storage-event": Hostile("on_object_finalized", FINALIZED, nested(DEEP), "skipped", says=TOO_DEEP),
    "huge-number-body": Hostile("on_message_published", PUBLISHED, b"9" * 5000, "skipped", says=READABLE),
    "not-utf8-structured-body": Hostile("on_message_published", STRUCTURED, b'{"a": "\xff"}', "skipped"),
    "not-json-not-cloudevent": Hostile("on_message_published", PLAIN, b"garbage", "skipped", says="HTTP 400"),
    "json-list-not-cloudevent": Hostile("on_message_published", PLAIN, b"[1]", "skipped", says=READABLE),
    # Envelopes the framework reads, but no platform sends: before, a 500 from deriving the run key.
    "surrogate-nonce": Hostile(
        "on_message_published", PLAIN, push(TRIGGER % b"x", {"nonce": "\ud800"}), "skipped", says="UTF-8"
    ),
    "surrogate-message-id": Hostile(
        "on_message_published", PLAIN, push(TRIGGER % b"x", messageId="\udc00"), "skipped", says="UTF-8"
    ),
    "surrogate-cancel": Hostile(
        "on_message_published", PLAIN, push(b"", {"action": "cancel", "run_key": "\ud800"}), "skipped"
    ),
    # Trigger documents: each a rejection record naming the trigger's own field.
    "surrogate-value": Hostile(
        "on_message_published", PLAIN, push(TRIGGER % b"\\ud800"), "rejected", "invalid_trigger", "parameters.message"
    ),
    "surrogate-key": Hostile(
        "on_message_published",
        PLAIN,
        push(b'{"pipeline": "echo", "parameters": {"\\udfff": "x", "message": "m"}}'),
        "rejected",
        "invalid_trigger",
        "parameters.\\udfff",
    ),
    "surrogate-yaml-escape": Hostile(
        "on_message_published",
        PLAIN,
        push(b'pipeline: echo\nparameters: {message: "\\ud800"}\n', {"format": "yaml"}),
        "rejected",
        "invalid_trigger",
    ),
    "deep-json-trigger": Hostile(
        "on_message_published", PLAIN, push(nested(DEEP)), "rejected", "invalid_trigger", "64 levels"
    ),
    "deep-yaml-trigger": Hostile(
        "on_message_published", PLAIN, push(nested(DEEP), {"format": "yaml"}), "rejected", "invalid_trigger"
    ),
    "yaml-aliases-bomb": Hostile(
        "on_message_published",
        PLAIN,
        push(b"a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n", {"format": "yaml"}),
        "rejected",
        "invalid_trigger",
        "aliases",
    ),
    "mebibyte-of-empty-lists": Hostile(
        "on_message_published", PLAIN, push(b"[" + b"[], " * FILL + b"[]]"), "rejected", "invalid_trigger", "values"
    ),
    "mebibyte-of-yaml-mappings": Hostile(
        "on_message_published",
        PLAIN,
        push(b"p: [" + b"{}, " * FILL + b"{}]\n", {"format": "yaml"}),
        "rejected",
        "invalid_trigger",
        "values",
    ),
    "huge-number-trigger": Hostile(
        "on_message_published",
        PLAIN,
        push(b'{"pipeline": "echo", "parameters": {"count": ' + b"9" * 5000 + b"}}"),
        "rejected",
        "invalid_trigger",
    ),
    "not-utf8-trigger": Hostile(
        "on_message_published", PLAIN, push(TRIGGER % b"\xff"), "rejected", "invalid_trigger", "UTF-8"
    ),
    "unknown-pipeline": Hostile(
        "on_message_published", PLAIN, push(b'{"pipeline": "nope"}'), "rejected", "unknown_pipeline", "'nope'"
    ),
}


@pytest.fixture(autouse=True)
def installed(relay: Relay) -> Iterator[Relay]:
    runtime.install(relay)
    yield relay
    runtime.install(None)


def outcome_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_hostile_request_is_acknowledged_with_one_line_and_at_most_one_record_naming_nothing_of_relay_s(
    case: Hostile, store: MemoryBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
):
    app = create_app(case.target, str(MAIN), "cloudevent").test_client()
    status = app.post(PUSH_PATH, headers=case.headers, data=case.body).status_code
    assert 200 <= status < 300, status  # acknowledged: a redelivery reads it no better
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["outcome"] == case.outcome and case.says in line["message"], line
    assert backend.launches == []
    written = store.uris("gs://results/")
    if case.code is None:
        assert written == [] and line["severity"] == "ERROR"  # no platform sends it: Relay's side to look at
        return
    [uri] = written
    record = records.decode(store.read(uri).data)
    assert (uri.split("/")[-2], record["error"]["code"], line["code"]) == ("rejected", case.code, case.code)
    shown = json.dumps(record) + line["message"]
    assert not [own for own in RELAYS_OWN if own in shown], shown
