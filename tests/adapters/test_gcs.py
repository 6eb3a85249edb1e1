"""GcsBlobStore on fake-gcs-server, whose generation preconditions are the real ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import FakeGcsServer, create_bucket, storage_client
from relay.adapters.gcs import GcsBlobStore
from relay.errors import BlobNotFoundError, PreconditionFailedError

pytestmark = pytest.mark.integration
BUCKET = "relay-results"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    with FakeGcsServer(tmp_path_factory.mktemp("gcs")) as running:
        create_bucket(running.url, BUCKET)
        yield running


@pytest.fixture
def client(server: FakeGcsServer) -> Any:
    return storage_client(server.url)


@pytest.fixture
def store(client: Any) -> GcsBlobStore:
    return GcsBlobStore(lambda: client)


def test_create_only_writes_lose_to_an_existing_object(store: GcsBlobStore, request: pytest.FixtureRequest):
    uri = f"gs://{BUCKET}/{request.node.name}/launch.json"
    first = store.write(uri, b'{"state": "launching"}', if_generation_match=0)
    with pytest.raises(PreconditionFailedError, match="generation precondition failed"):
        store.write(uri, b"{}", if_generation_match=0)
    second = store.write(uri, b'{"state": "launched"}', if_generation_match=first)
    with pytest.raises(PreconditionFailedError):
        store.write(uri, b"{}", if_generation_match=first)
    assert second != first
    blob = store.read(uri)
    assert (blob.data, blob.generation) == (b'{"state": "launched"}', second)
    info = store.stat(uri)
    assert (info.size, info.generation) == (len(b'{"state": "launched"}'), second)


def test_reads_at_a_generation_that_is_gone_are_not_found(store: GcsBlobStore, request: pytest.FixtureRequest):
    uri = f"gs://{BUCKET}/{request.node.name}/t.json"
    old = store.write(uri, b"1")
    store.write(uri, b"2")
    with pytest.raises(BlobNotFoundError):
        store.read(uri, generation=old)
    with pytest.raises(BlobNotFoundError):
        store.read(f"gs://{BUCKET}/{request.node.name}/missing.json")
    with pytest.raises(BlobNotFoundError):
        store.stat(f"gs://{BUCKET}/{request.node.name}/missing.json")


def test_deletes_ignore_absence(store: GcsBlobStore, request: pytest.FixtureRequest):
    # fake-gcs-server 1.54 does not check ifGenerationMatch on delete (Cloud Storage does), so only the
    # unconditional behaviour is asserted here.
    uri = f"gs://{BUCKET}/{request.node.name}/claim.json"
    generation = store.write(uri, b"claim")
    store.delete(uri, if_generation_match=generation)
    store.delete(uri)
    with pytest.raises(BlobNotFoundError):
        store.read(uri)


def test_the_client_is_made_once_on_first_use(client: Any, tmp_path: Path):
    made: list[Any] = []

    def factory() -> Any:
        made.append(client)
        return client

    store = GcsBlobStore(factory)
    assert made == []
    for n in range(3):
        store.write(f"gs://{BUCKET}/once/{n}.json", b"{}")
    assert len(made) == 1


def test_objects_are_stored_with_the_content_type_their_name_implies(store: GcsBlobStore, client: Any):
    for name, expected in (
        ("r.json", "application/json"),
        ("report.html", "text/html"),
        ("h.jsonl", "application/jsonl"),
        ("t.yaml", "application/yaml"),
    ):
        store.write(f"gs://{BUCKET}/types/{name}", b"x")
        assert client.bucket(BUCKET).get_blob(f"types/{name}").content_type == expected


def test_listing_a_prefix(store: GcsBlobStore):
    for name in ("list/runs/a/launch.json", "list/runs/b/launch.json", "list/rejected/c.json"):
        store.write(f"gs://{BUCKET}/{name}", b"{}")
    assert list(store.list(f"gs://{BUCKET}/list/runs/")) == [
        f"gs://{BUCKET}/list/runs/a/launch.json",
        f"gs://{BUCKET}/list/runs/b/launch.json",
    ]
