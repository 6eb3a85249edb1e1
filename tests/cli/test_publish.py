"""`relay publish` up to the wire; tests/cli/test_emulators.py publishes to the real Pub/Sub emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from relaycli.errors import UsageError
from relaycli.pubsub import topic_path
from tests.cli.support import Ran

EMULATOR = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}


@pytest.mark.parametrize(
    ("topic", "project", "env", "expected"),
    [
        ("projects/proj-lab/topics/relay-triggers", None, {}, "projects/proj-lab/topics/relay-triggers"),
        ("projects/proj-lab/topics/relay-triggers", "proj-lab", {}, "projects/proj-lab/topics/relay-triggers"),
        ("relay-triggers", "proj-lab", {}, "projects/proj-lab/topics/relay-triggers"),
        (
            "relay-triggers",
            None,
            {**EMULATOR, "PUBSUB_PROJECT_ID": "relay-local"},
            "projects/relay-local/topics/relay-triggers",
        ),
        (
            "relay-triggers",
            None,
            {**EMULATOR, "GOOGLE_CLOUD_PROJECT": "proj-lab"},
            "projects/proj-lab/topics/relay-triggers",
        ),
        (
            "relay-triggers",
            None,
            {"GOOGLE_CLOUD_PROJECT": "proj-lab", "PUBSUB_PROJECT_ID": "x"},
            "projects/proj-lab/topics/relay-triggers",
        ),
    ],
)
def test_topic_paths(topic, project, env, expected):
    assert topic_path(topic, project, env) == expected


@pytest.mark.parametrize(
    ("topic", "project", "error"),
    [
        (
            "projects/proj-lab/topics/t1x",
            "other",
            "--project: expected proj-lab (the project in --topic projects/proj-lab/topics/t1x)",
        ),
        ("a/b", "proj-lab", "--topic: expected a topic name"),
        ("goog-triggers", "proj-lab", "--topic: expected a topic name"),  # Pub/Sub keeps goog... for itself
        ("trïggers", "proj-lab", "--topic: expected a topic name"),
        ("projects/proj-lab/topics/ab", None, "--topic: expected projects/PROJECT/topics/TOPIC"),
        ("projects/lab/topics/relay-triggers", None, "--topic: expected projects/PROJECT/topics/TOPIC"),
        ("projects/proj-lab/subscriptions/relay", None, "--topic: expected projects/PROJECT/topics/TOPIC"),
        ("relay-triggers", "lab", "--project: expected a project id: 6-30 lower-case letters"),
        ("relay-triggers", None, "--project: expected the project of topic relay-triggers"),
    ],
)
def test_topics_that_cannot_be_resolved(topic, project, error):
    with pytest.raises(UsageError, match="^" + error.replace("(", r"\(").replace(")", r"\)")):
        topic_path(topic, project, EMULATOR)


def test_an_invalid_document_is_not_published(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"pipeline": "echo"}))
    ran = cli("publish", str(path), "--topic", "projects/proj-lab/topics/relay-triggers")
    assert ran.code == 1 and ran.out == ""
    assert ran.err.splitlines() == [
        f"relay publish: {path}: not published: invalid: 1 problem (invalid_parameters)",
        "  parameters.message: expected a string, found nothing",
    ]


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        (["nonce=1"], "--attribute: expected none of format, nonce (set here: use --format), found nonce"),
        (["bucketId=lab-data"], "--attribute: expected none of payloadFormat, bucketId"),
        (["a=1", "a=2"], "--attribute: expected each key once, found a more than once"),
        (["action=cancel"], "--attribute: expected attribute run_key: the run to act on, found none"),
        (["action=explode", "run_key=k"], "--attribute: expected attribute action: one of"),
        (["noequals"], "argument --attribute: expected KEY=VALUE (action=cancel), found 'noequals'"),
        (["goog-x=1"], "argument --attribute: expected a key of at most 256 bytes not starting with goog"),
    ],
)
def test_attributes_the_function_would_misread_are_refused_before_publishing(
    cli: Callable[..., Ran], tmp_path: Path, attributes: list[str], error: str
):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"pipeline": "echo", "parameters": {"message": "hi"}}))
    flags = [part for attribute in attributes for part in ("--attribute", attribute)]
    ran = cli("publish", str(path), "--topic", "projects/proj-lab/topics/relay-triggers", *flags)
    assert ran.code == 2 and ran.out == "" and error in ran.err
