"""The push step over local files, into an in-memory destination that behaves like a bucket."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.checksums import Checksums, HashingReader, s3_md5
from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.destinations import Destination, Presence, Receipt
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.policies import TrustingGate


class MemoryDestination:
    """Keeps what it is sent, by name, with the checksums of the bytes received."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, Checksums, str]] = {}
        self.options: Mapping[str, Any] = {}
        self.closed: list[str] = []

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        if item.name not in self.objects:
            return Presence.ABSENT
        return Presence.SAME if self.objects[item.name][1].matches(checksums) else Presence.DIFFERENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        chunks = []
        while chunk := stream.read(1024):
            chunks.append(chunk)
        self.objects[item.name] = (b"".join(chunks), stream.checksums, item.content_type)
        return Receipt(item.uri, f"memory://{item.name}", stream.bytes, stream.checksums.describe())

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        self.closed.append(message)
        return []


@pytest.fixture
def sink() -> MemoryDestination:
    return MemoryDestination()


def run(
    sink: MemoryDestination, sources: list[str], secrets: dict[str, str] | None = None, **parameters: Any
) -> StepResult:
    def factory(options: Mapping[str, Any]) -> Destination:
        sink.options = options
        return sink

    spec = spec_for(
        inputs={"sources": sources},
        outputs={},
        parameters={
            "destination": {"kind": "memory", "token": "secret://sink-token"},
            "run_key": "push-1",
            **parameters,
        },
    )
    context = StepContext(
        resolver=LocalSecrets(env={"RELAY_SECRET_SINK_TOKEN": "t0ken-value"} if secrets is None else secrets),
        gate=TrustingGate(),
    )
    return run_step(lambda s, c: push(s, c, factories={"memory": factory}), spec, context)


def test_every_object_under_a_folder_is_pushed_with_a_receipt(sink: MemoryDestination, source: Path):
    result = run(sink, [f"{source}/"])
    assert result.status == 200, result.message
    assert sorted(sink.objects) == ["plate-1/result.json", "plate-2.json"]
    assert sink.options == {"token": "t0ken-value"}  # resolved inside the step only
    receipts = result.outputs["receipts"]
    assert {r["source"] for r in receipts} == {
        (source / "plate-1/result.json").as_uri(),
        (source / "plate-2.json").as_uri(),
    }
    assert result.metrics["files"] == 2 and result.metrics["bytes"] == sum(r["bytes"] for r in receipts)
    assert sink.closed == ["Relay push push-1: 2 object(s)"]


def test_select_sends_the_pointed_part_and_a_document_without_it_is_an_error(sink: MemoryDestination, source: Path):
    (source / "notes.json").write_text(json.dumps({"other": 1}))
    result = run(sink, [f"{source}/"], select="/extra_data/od600")
    assert result.status == 422 and "notes.json: nothing at /extra_data/od600" in result.message
    assert json.loads(sink.objects["plate-2.json"][0]) == [0.3]
    assert len(result.outputs["receipts"]) == 2  # what did succeed keeps its receipts


def test_a_rerun_skips_what_is_there_and_never_overwrites_a_different_object(sink: MemoryDestination, source: Path):
    assert run(sink, [f"{source}/"]).status == 200
    (source / "plate-2.json").write_text(json.dumps({"extra_data": {"od600": [9.9]}}))
    again = run(sink, [f"{source}/"])
    assert again.status == 409 and "a different plate-2.json is at the destination" in again.message
    skipped = [r for r in again.outputs["receipts"] if r["skipped"]]
    assert [r["source"] for r in skipped] == [(source / "plate-1/result.json").as_uri()]
    forced = run(sink, [f"{source}/"], overwrite=True)
    assert forced.status == 200 and json.loads(sink.objects["plate-2.json"][0])["extra_data"]["od600"] == [9.9]


def test_a_missing_secret_fails_the_step_naming_the_reference(sink: MemoryDestination, source: Path):
    result = run(sink, [f"{source}/"], secrets={})
    assert result.status == 424 and "secret://sink-token: no such secret" in result.message
    assert sink.objects == {}


@pytest.mark.parametrize(
    ("sources", "status", "fragment"),
    [([], 400, "inputs.sources: expected one or more URIs"), (["ftp://x/"], 400, "expected a gs://, s3:// or file://")],
)
def test_bad_sources(sink: MemoryDestination, sources: list[str], status: int, fragment: str):
    result = run(sink, sources)
    assert result.status == status and fragment in result.message


def test_an_empty_source_is_not_found(sink: MemoryDestination, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert run(sink, [f"{tmp_path / 'empty'}/"]).status == 404


def test_a_source_that_changes_while_read_fails_the_object(sink: MemoryDestination, source: Path):
    class Shifty(MemoryDestination):
        def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
            (source / "plate-2.json").write_text("changed underneath")  # between the checksum pass and the copy
            return super().send(item, stream, overwrite=overwrite)

    result = run(Shifty(), [str(source / "plate-2.json")])
    assert result.status == 502 and "changed or corrupted in transit" in result.message


def test_objects_a_batch_platform_never_published_are_not_counted_as_pushed(source: Path):
    class FailingPublish(MemoryDestination):
        def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
            receipt = super().send(item, stream, overwrite=overwrite)
            return Receipt(receipt.source, receipt.destination, receipt.bytes, receipt.checksum, pending=True)

        def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
            raise StepError(502, "the dataset version was refused")

    result = run(FailingPublish(), [f"{source}/"])
    assert result.status == 502 and "the dataset version was refused" in result.message
    assert result.metrics["files"] == 0 and result.metrics["bytes"] == 0
    assert all(r["pending"] for r in result.outputs["receipts"])


def test_one_failing_source_keeps_the_receipts_of_the_others(sink: MemoryDestination, source: Path):
    (source / "plate 3 (é).json").write_text(json.dumps({"extra_data": {"od600": [0.5]}}))
    result = run(sink, [f"{source}/", str(source / "missing.json")])
    assert result.status == 404 and "missing.json" in result.message
    assert sorted(sink.objects) == ["plate 3 (é).json", "plate-1/result.json", "plate-2.json"]
    assert len(result.outputs["receipts"]) == 3 and result.metrics["failed"] == 1


def test_overwrite_must_be_a_boolean(sink: MemoryDestination, source: Path):
    result = run(sink, [f"{source}/"], overwrite="false")
    assert result.status == 400 and "parameters.overwrite: expected true or false" in result.message


@pytest.mark.parametrize(
    ("answer", "md5"),
    [
        ({"ETag": '"9e107d9d372bb6826bd81d3542a419d6"'}, "nhB9nTcrtoJr2B01QqQZ1g=="),
        ({"ETag": '"9e107d9d372bb6826bd81d3542a419d6-3"'}, None),  # multipart
        ({"ETag": '"9e107d9d372bb6826bd81d3542a419d6"', "ServerSideEncryption": "aws:kms"}, None),
        ({"ETag": '"9e107d9d372bb6826bd81d3542a419d6"', "SSECustomerAlgorithm": "AES256"}, None),
    ],
)
def test_an_s3_etag_counts_as_md5_only_when_it_is_one(answer: dict[str, str], md5: str | None):
    assert s3_md5(answer) == md5


def test_the_message_says_what_was_sent_skipped_and_refused(sink: MemoryDestination, source: Path):
    assert run(sink, [f"{source}/"]).message == "sent 2 object(s) (69 bytes)"
    (source / "plate-2.json").write_text(json.dumps({"extra_data": {"od600": [9.9]}}))
    again = run(sink, [f"{source}/"])
    assert again.status == 409
    assert again.message.startswith("sent 0 object(s) (0 bytes), skipped 1 already there, 1 refused: file://")
    assert again.metrics == {**again.metrics, "files": 1, "skipped": 1, "failed": 1, "bytes": 0}


def test_failures_on_the_way_are_counted_apart_from_refusals(source: Path):
    class Broken(MemoryDestination):
        def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
            if item.name == "plate-2.json":
                raise StepError(502, "the platform went away")
            return super().send(item, stream, overwrite=overwrite)

    result = run(Broken(), [f"{source}/", str(source / "missing.json")])
    assert result.status == 502
    assert result.message.startswith("sent 1 object(s) (")
    assert ", 1 refused, 1 failed: " in result.message and "the platform went away" in result.message


def test_a_folder_is_listed_in_path_order_a_folder_at_a_time(tmp_path: Path):
    from pipelines.steps.objects import FileObjects

    for name in ["a.txt", "a/b.txt", "a/c/d", "a-b", "a b/x", "B", "é/1", "a.b/c", "aa"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "link-dir").symlink_to(tmp_path / "a")  # not entered, as rglob does not; listed, as a link
    (tmp_path / "link-file").symlink_to(tmp_path / "B")
    listed = FileObjects().list(f"{tmp_path}/")
    # Links are listed whatever they point to, never followed: their open refuses them by name.
    expected = sorted(p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink())
    assert [item.name for item in listed] == [p.relative_to(tmp_path).as_posix() for p in expected]
