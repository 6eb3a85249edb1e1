"""GcsBlobStore (the Cloud Storage JSON API) on fake-gcs-server, whose generation preconditions are the real ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import FakeGcsServer, create_bucket, storage_client
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.http import HttpClient, Response
from relay.adapters.tokens import NoTokenSource
from relay.errors import BlobNotFoundError, BlobRequestError, PreconditionFailedError, StorageUnavailableError

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
def store(server: FakeGcsServer) -> GcsBlobStore:
    # Pages of two objects, so a listing of a few walks through page tokens.
    return GcsBlobStore(endpoint=server.url, tokens=NoTokenSource(), page_size=2)


def test_create_only_writes_lose_to_an_existing_object(
    store: GcsBlobStore, client: Any, request: pytest.FixtureRequest
):
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
    # The version's update time, as the server keeps it (`relay backfill --since`).
    assert info.updated is not None and info.updated == client.bucket(BUCKET).get_blob(uri.split("/", 3)[3]).updated


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


def test_an_objects_facts_are_read_at_the_generation_asked_for(store: GcsBlobStore, client: Any, request):
    # What a route's templates use comes from here, never from a message: the version named, or none.
    blob = client.bucket(BUCKET).blob(f"{request.node.name}/r.csv")
    blob.metadata = {"batch": "b7"}
    blob.upload_from_string(b"a,b\n", content_type="text/csv")
    uri, old = f"gs://{BUCKET}/{request.node.name}/r.csv", int(blob.generation)
    info = store.stat(uri, generation=old)
    assert (info.size, info.generation, info.content_type, dict(info.metadata)) == (4, old, "text/csv", {"batch": "b7"})
    new = store.write(uri, b"later")
    assert store.stat(uri).generation == new and store.stat(uri, generation=new).metadata == {}
    with pytest.raises(BlobNotFoundError):
        store.stat(uri, generation=old)


def test_deletes_ignore_absence(store: GcsBlobStore, request: pytest.FixtureRequest):
    # fake-gcs-server 1.54 does not check ifGenerationMatch on delete (Cloud Storage does), so only the
    # unconditional behaviour is asserted here.
    uri = f"gs://{BUCKET}/{request.node.name}/claim.json"
    generation = store.write(uri, b"claim")
    store.delete(uri, if_generation_match=generation)
    store.delete(uri)
    with pytest.raises(BlobNotFoundError):
        store.read(uri)


def test_a_request_storage_refuses_as_malformed_is_not_transient(store: GcsBlobStore):
    # A 30-digit generation (Cloud Storage also answers 400 to a bucket name it cannot hold): no retry can help.
    with pytest.raises(BlobRequestError, match="answered 400"):
        store.read(f"gs://{BUCKET}/t.json", generation=10**29)


class CountingClient(HttpClient):
    """The real client, noting each request's method."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Response:
        self.sent.append(method)
        return super().request(method, url, **kwargs)


def test_each_operation_is_one_request_on_the_shared_client(server: FakeGcsServer, request: pytest.FixtureRequest):
    http = CountingClient()
    store = GcsBlobStore(http, NoTokenSource(), endpoint=server.url)
    uri = f"gs://{BUCKET}/{request.node.name}/claim.json"
    generation = store.write(uri, b"{}", if_generation_match=0)
    store.read(uri, generation=generation)
    store.stat(uri)
    store.delete(uri, if_generation_match=generation)
    # No bucket-metadata lookups on the side (python-storage sends some), nothing in the background.
    assert http.sent == ["POST", "GET", "GET", "DELETE"]


def test_objects_are_stored_with_the_content_type_their_name_implies(store: GcsBlobStore, client: Any):
    for name, expected in (
        ("r.json", "application/json"),
        ("report.html", "text/html"),
        ("h.jsonl", "application/jsonl"),
        ("t.yaml", "application/yaml"),
    ):
        store.write(f"gs://{BUCKET}/types/{name}", b"x")
        assert client.bucket(BUCKET).get_blob(f"types/{name}").content_type == expected


def test_listing_a_prefix_pages_through_it(store: GcsBlobStore):
    runs = [f"list/runs/{key}/launch.json" for key in "abcde"]
    for name in (*runs, "list/rejected/c.json"):
        store.write(f"gs://{BUCKET}/{name}", b"{}")
    assert list(store.list(f"gs://{BUCKET}/list/runs/")) == [f"gs://{BUCKET}/{name}" for name in runs]


def test_names_are_escaped(store: GcsBlobStore):
    uri = f"gs://{BUCKET}/odd names/a b#c?d%e.json"
    generation = store.write(uri, b"{}")
    assert store.stat(uri).generation == generation and list(store.list(f"gs://{BUCKET}/odd names/")) == [uri]


def test_an_unreachable_server_is_transient(tmp_path: Path):
    with FakeGcsServer(tmp_path) as gone:
        url = gone.url
    store = GcsBlobStore(endpoint=url, tokens=NoTokenSource())
    with pytest.raises(StorageUnavailableError, match="did not answer"):
        store.read(f"gs://{BUCKET}/t.json")
