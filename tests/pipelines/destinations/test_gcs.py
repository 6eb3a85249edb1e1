"""The gcs destination on fake-gcs-server: metadata kept, re-runs skip, nothing different is replaced unasked."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import FakeGcsServer, create_bucket, storage_client
from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.destinations import Presence
from pipelines.steps.destinations.gcs import GcsDestination
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with FakeGcsServer(tmp_path_factory.mktemp("gcs-destination")) as gcs:
        create_bucket(gcs.url, "ml-data")
        yield storage_client(gcs.url)


def item(name: str, data: bytes) -> SourceObject:
    return SourceObject(
        uri=f"file:///src/{name}",
        name=name,
        size=len(data),
        checksums=of_bytes(data),
        content_type="text/csv",
        metadata={"instrument": "reader-7"},
    )


def send(destination: GcsDestination, source: SourceObject, data: bytes, *, overwrite: bool = False) -> Any:
    return destination.send(source, HashingReader(io.BytesIO(data)), overwrite=overwrite)


def test_objects_keep_content_type_and_metadata_and_a_rerun_sees_them(client: Any, tmp_path: Path):
    destination = GcsDestination("ml-data", "incoming", client=client)
    data = b"well,od600\nA1,0.12\n"
    source = item("plates/a.csv", data)
    assert destination.check(source, source.checksums) is Presence.ABSENT
    receipt = send(destination, source, data)
    blob = client.bucket("ml-data").get_blob("incoming/plates/a.csv")
    assert blob.download_as_bytes() == data and blob.content_type == "text/csv"
    assert blob.metadata == {"instrument": "reader-7"}
    assert receipt.destination == "gs://ml-data/incoming/plates/a.csv" and receipt.version == str(blob.generation)
    assert destination.check(source, source.checksums) is Presence.SAME
    changed = item("plates/a.csv", b"well,od600\nA1,0.99\n")
    assert destination.check(changed, changed.checksums) is Presence.DIFFERENT


def test_an_object_that_appeared_meanwhile_is_not_replaced_unless_asked(client: Any):
    destination = GcsDestination("ml-data", client=client)
    client.bucket("ml-data").blob("raced.csv").upload_from_string(b"theirs")
    mine = b"mine"
    with pytest.raises(StepError, match="appeared meanwhile; not overwritten") as refused:
        send(destination, item("raced.csv", mine), mine)
    assert refused.value.status == 409
    send(destination, item("raced.csv", mine), mine, overwrite=True)
    assert client.bucket("ml-data").blob("raced.csv").download_as_bytes() == b"mine"


def test_unknown_options_are_refused():
    with pytest.raises(StepError, match="found bukcet"):
        GcsDestination.from_options({"bucket": "b", "bukcet": "typo"})


def test_bytes_that_differ_from_what_the_source_states_leave_no_object(client: Any):
    destination = GcsDestination("ml-data", "checked", client=client)
    stated = item("plate.csv", b"what the source says it holds")
    with pytest.raises(StepError) as refused:
        send(destination, stated, b"what was actually read back!!")  # same length, other bytes
    assert refused.value.status == 502
    assert client.bucket("ml-data").get_blob("checked/plate.csv") is None
