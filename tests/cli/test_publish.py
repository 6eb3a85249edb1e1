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
        ("projects/lab/topics/relay-triggers", None, {}, "projects/lab/topics/relay-triggers"),
        ("projects/lab/topics/relay-triggers", "lab", {}, "projects/lab/topics/relay-triggers"),
        ("relay-triggers", "lab", {}, "projects/lab/topics/relay-triggers"),
        (
            "relay-triggers",
            None,
            {**EMULATOR, "PUBSUB_PROJECT_ID": "relay-local"},
            "projects/relay-local/topics/relay-triggers",
        ),
        ("relay-triggers", None, {**EMULATOR, "GOOGLE_CLOUD_PROJECT": "lab"}, "projects/lab/topics/relay-triggers"),
        (
            "relay-triggers",
            None,
            {"GOOGLE_CLOUD_PROJECT": "lab", "PUBSUB_PROJECT_ID": "x"},
            "projects/lab/topics/relay-triggers",
        ),
    ],
)
def test_topic_paths(topic, project, env, expected):
    assert topic_path(topic, project, env) == expected


@pytest.mark.parametrize(
    ("topic", "project", "error"),
    [
        (
            "projects/lab/topics/t1x",
            "other",
            "--project: expected lab (the project in --topic projects/lab/topics/t1x)",
        ),
        ("a/b", "lab", "--topic: expected a topic name"),
        ("relay-triggers", None, "--project: expected the project of topic relay-triggers"),
    ],
)
def test_topics_that_cannot_be_resolved(topic, project, error):
    with pytest.raises(UsageError, match="^" + error.replace("(", r"\(").replace(")", r"\)")):
        topic_path(topic, project, EMULATOR)


def test_an_invalid_document_is_not_published(cli: Callable[..., Ran], tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"pipeline": "echo"}))
    ran = cli("publish", str(path), "--topic", "projects/lab/topics/relay-triggers")
    assert ran.code == 1 and ran.out == ""
    assert ran.err.splitlines() == [
        f"relay publish: {path}: not published: invalid: 1 problem (invalid_parameters)",
        "  parameters.message: expected a string, found nothing",
    ]
