"""The gcs destination's large objects: one streamed request, resumed after a cut; Cloud Storage sources copied by
the service. Against fake-gcs-server, and a proxy on 127.0.0.1 that cuts a connection mid-object."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from devstack import FakeGcsServer, create_bucket, storage_client
from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.destinations import Destination
from pipelines.steps.destinations.gcs import BUFFER, SINGLE_REQUEST, GcsDestination
from pipelines.steps.errors import StepError
from pipelines.steps.objects import READ_BUFFER, FileObjects, GcsObjects, SourceObject, resuming
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.pipelines.faults import PIECE, CuttingProxy
from tests.policies import TrustingGate

pytestmark = pytest.mark.integration
SIZE = SINGLE_REQUEST + 12 * 1024 * 1024  # streamed, not one multipart request
DATA = os.urandom(SIZE)
HEADERS = 4096  # room for the HTTP request and answer lines around the bytes counted


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    with FakeGcsServer(tmp_path_factory.mktemp("gcs-stream")) as server:
        for bucket in ("lab-data", "ml-data"):
            create_bucket(server.url, bucket)
        with client_of(server.url) as client:
            client.bucket("lab-data").blob("plates/big.bin").upload_from_string(DATA)
        yield server


@contextmanager
def client_of(url: str) -> Iterator[Any]:
    """A storage client whose pooled connections are closed at the end (not left to the garbage collector)."""
    client = storage_client(url)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def destination_at(url: str, prefix: str = "") -> Iterator[GcsDestination]:
    with client_of(url) as client:
        destination = GcsDestination("ml-data", prefix, client=client)
        try:
            yield destination
        finally:
            destination.close("")


def listed(url: str, uri: str) -> SourceObject:
    with client_of(url) as client:
        return next(iter(GcsObjects(client).list(uri)))


def stored(gcs: FakeGcsServer, name: str) -> bytes | None:
    with client_of(gcs.url) as client:
        blob = client.bucket("ml-data").get_blob(name)
        return None if blob is None else bytes(blob.download_as_bytes())


def test_a_read_cut_mid_object_goes_on_from_where_it_stopped(gcs: FakeGcsServer):
    with (
        CuttingProxy(("127.0.0.1", gcs.port), cut_down_after=SIZE // 2) as proxy,
        client_of(proxy.url) as client,
        destination_at(proxy.url, "read-cut") as destination,
    ):
        item = listed(proxy.url, "gs://lab-data/plates/big.bin")
        with resuming(GcsObjects(client), item) as source:
            receipt = destination.send(item, HashingReader(source), overwrite=False)
    assert proxy.cuts == 1 and stored(gcs, "read-cut/big.bin") == DATA
    assert receipt.checksum == f"crc32c={item.checksums.crc32c}"
    # The read went on with a ranged GET from where it stopped (what was lost: the read under way, and the rest of
    # the proxy's last piece); the upload, one request, never noticed.
    assert SIZE < proxy.down <= SIZE + READ_BUFFER + PIECE + HEADERS * 10
    assert SIZE < proxy.up <= SIZE + HEADERS * 10


def test_a_cut_upload_on_fake_gcs_server_is_sent_again_in_a_new_session(gcs: FakeGcsServer):
    # fake-gcs-server keeps nothing of a request that was cut, and a status query finalizes what it has (here
    # nothing): the destination removes that object and sends the whole object in a new session.
    item = listed(gcs.url, "gs://lab-data/plates/big.bin")
    with (
        CuttingProxy(("127.0.0.1", gcs.port), cut_up_after=SIZE // 2) as proxy,
        destination_at(proxy.url, "upload-cut") as destination,
        client_of(gcs.url) as client,
        resuming(GcsObjects(client), item) as source,
    ):
        destination.send(item, HashingReader(source), overwrite=False)
    assert proxy.cuts == 1 and stored(gcs, "upload-cut/big.bin") == DATA
    assert proxy.up <= SIZE // 2 + BUFFER + SIZE + HEADERS * 10


class Sessions(ThreadingHTTPServer):
    """Resumable upload sessions as Cloud Storage documents them: what arrives is kept even when the request is
    cut, a status query (`Content-Range: bytes */SIZE`) answers 308 with the Range kept, and a request must start
    exactly there."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SessionHandler)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.starts: list[int] = []  # where each request with bytes began
        self.lock = threading.Lock()


class SessionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Sessions

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        metadata = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        key = f"s{len(self.server.sessions)}"
        self.server.sessions[key] = {"data": bytearray(), "size": int(self.headers["X-Upload-Content-Length"])}
        self.server.sessions[key]["metadata"] = metadata
        self.answer(200, {}, {"Location": f"http://{self.headers['Host']}/upload/session/{key}"})

    def do_DELETE(self) -> None:
        self.answer(499)

    def do_PUT(self) -> None:
        session = self.server.sessions[self.path.rsplit("/", 1)[-1]]
        data, size = session["data"], session["size"]
        sending = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers["Content-Range"])
        if sending:
            start, left = int(sending.group(1)), int(self.headers["Content-Length"])
            if start != len(data):
                return self.answer(400, {"error": f"expected bytes from {len(data)}, found {start}"})
            self.server.starts.append(start)
            while left and (piece := self.rfile.read1(min(left, 65536))):
                data += piece  # kept as it arrives: a cut request keeps what came before the cut
                left -= len(piece)
            if left:
                self.close_connection = True
                return
        if len(data) == size:
            crc = base64.b64encode(google_crc32c.Checksum(bytes(data)).digest()).decode()
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            return self.answer(200, {"size": str(size), "crc32c": crc, "md5Hash": md5, "generation": "7"})
        self.answer(308, None, {"Range": f"bytes=0-{len(data) - 1}"} if data else {})


def test_a_cut_upload_goes_on_from_what_the_session_kept(tmp_path: Path):
    (tmp_path / "big.bin").write_bytes(DATA)
    item = SourceObject((tmp_path / "big.bin").as_uri(), "big.bin", SIZE, of_bytes(DATA))
    sessions = Sessions()
    threading.Thread(target=sessions.serve_forever, daemon=True).start()
    try:
        with (
            CuttingProxy(sessions.server_address[:2], cut_up_after=SIZE // 2) as proxy,  # type: ignore[arg-type]
            destination_at(proxy.url) as destination,
            resuming(FileObjects(), item) as source,
        ):
            receipt = destination.send(item, HashingReader(source), overwrite=False)
    finally:
        sessions.shutdown()
        sessions.server_close()
    (session,) = sessions.sessions.values()
    assert bytes(session["data"]) == DATA and session["metadata"]["crc32c"] == item.checksums.crc32c
    # The second request began where the session stopped, not at 0: only what was in flight went twice.
    assert sessions.starts[0] == 0 and 0 < sessions.starts[1] < SIZE and len(sessions.starts) == 2
    assert proxy.cuts == 1 and proxy.up <= SIZE + BUFFER + HEADERS * 10
    assert receipt.checksum == f"crc32c={item.checksums.crc32c}" and receipt.version == "7"


def test_bytes_other_than_the_source_states_are_never_finalized(gcs: FakeGcsServer, tmp_path: Path):
    (tmp_path / "big.bin").write_bytes(DATA[:-1] + b"!")  # the same size, the last byte changed
    item = SourceObject((tmp_path / "big.bin").as_uri(), "big.bin", SIZE, of_bytes(DATA))
    with (
        destination_at(gcs.url, "changed") as destination,
        resuming(FileObjects(), item) as source,
        pytest.raises(StepError, match="changed or corrupted") as failed,
    ):
        destination.send(item, HashingReader(source), overwrite=False)
    assert failed.value.status == 502 and stored(gcs, "changed/big.bin") is None


def run_push(client: Any, sources: list[str], **parameters: Any) -> StepResult:
    def gcs_destination(options: Mapping[str, Any]) -> Destination:
        return GcsDestination(options["bucket"], options.get("prefix", ""), client=client)

    spec = spec_for(inputs={"sources": sources}, outputs={}, parameters=parameters)
    context = StepContext(resolver=LocalSecrets(env={}), gate=TrustingGate())
    step = lambda s, c: push(s, c, stores={"gs": GcsObjects(client)}, factories={"gcs": gcs_destination})  # noqa: E731
    return run_step(step, spec, context)


def test_a_cloud_storage_source_is_copied_by_the_service_checksums_checked(gcs: FakeGcsServer):
    with CuttingProxy(("127.0.0.1", gcs.port)) as proxy, client_of(proxy.url) as client:
        result = run_push(
            client,
            ["gs://lab-data/plates/big.bin"],
            destination={"kind": "gcs", "bucket": "ml-data", "prefix": "copied"},
        )
    assert result.status == 200, result.message
    assert stored(gcs, "copied/big.bin") == DATA
    (receipt,) = result.outputs["receipts"]
    assert receipt["checksum"] == f"crc32c={listed(gcs.url, 'gs://lab-data/plates/big.bin').checksums.crc32c}"
    assert receipt["bytes"] == SIZE
    assert proxy.up + proxy.down < 64 * 1024  # requests and answers only: the bytes never passed through the step
    assert result.message == f"sent 1 object(s) ({SIZE} bytes)"


def test_select_sends_the_selected_document_not_a_copy(gcs: FakeGcsServer):
    with client_of(gcs.url) as client:
        document = json.dumps({"extra": {"od": [1]}, "x": 2})
        client.bucket("lab-data").blob("plates/doc.json").upload_from_string(document)
        result = run_push(
            client, ["gs://lab-data/plates/doc.json"], destination={"kind": "gcs", "bucket": "ml-data"}, select="/extra"
        )
    assert result.status == 200, result.message
    assert json.loads(stored(gcs, "doc.json") or b"") == {"od": [1]}
