"""Destination: another Cloud Storage bucket/prefix, streamed or copied by the service, type and metadata kept.

An object larger than one request's worth goes through one resumable upload session, sent as one streamed request
(the service answers only once it has the whole object); after a failure the session says how much it kept and the
rest is read again from the source and sent from there. An object already in Cloud Storage is copied by the
service itself (`rewrite`): its bytes never pass through the step.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from pipelines.steps.checksums import Checksums, HashingReader
from pipelines.steps.destinations import Presence, Receipt, check_read, known_options, required
from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject

# Up to this size one multipart request (metadata and bytes) is cheaper than a session's two; held in memory.
SINGLE_REQUEST = 8 * 1024 * 1024
BUFFER = 1024 * 1024  # what is read from the source per piece of a streamed request body
ATTEMPTS = 5  # requests per session, each going on from where the session says it stopped
SESSIONS = 2  # a session that ends without the object (expired; a server that closes it early) is replaced once
# Connect, then the answer: it comes once the service has received and checked the whole object.
TIMEOUT = (30.0, 300.0)
_RANGE = re.compile(r"bytes=0-(\d+)")


class GcsDestination:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None, *, http: Any = None) -> None:
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        self._client = client
        self._bucket = client.bucket(bucket)
        self._prefix = prefix.strip("/")
        # A session URI is a credential of its own: its requests carry no token. A plain session also never sends
        # a streamed body twice (an AuthorizedSession re-sends it after a 401, when it has already been read).
        self._http = http or requests.Session()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, egress: Egress = STRICT) -> GcsDestination:
        # `egress` is not consulted: the client talks to Cloud Storage's own host only, which no option changes.
        known_options(options, frozenset({"bucket", "prefix"}))
        return cls(required(options, "bucket", "gcs"), str(options.get("prefix", "")))

    def _name(self, item: SourceObject) -> str:
        return f"{self._prefix}/{item.name}" if self._prefix else item.name

    def _uri(self, name: str) -> str:
        return f"gs://{self._bucket.name}/{name}"

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        blob = self._bucket.get_blob(self._name(item))
        if blob is None:
            return Presence.ABSENT
        same = checksums.matches(Checksums(crc32c=blob.crc32c, md5=blob.md5_hash))
        return Presence.SAME if same else Presence.DIFFERENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        name = self._name(item)
        if item.size <= SINGLE_REQUEST:
            stored = self._upload_small(item, name, stream, overwrite)
        else:
            stored = self._upload_streamed(item, name, stream, overwrite)
        sent = stream.checksums
        checksums = Checksums.stated(stored.get("crc32c"), stored.get("md5Hash"))
        if stream.bytes != item.size or sent.matches(item.checksums) is False or sent.matches(checksums) is False:
            # Never leave a wrong object behind: a re-run would take it for the source's and skip it.
            self._remove(name, stored)
            raise StepError(
                502,
                f"{self._uri(name)}: sent {stream.bytes} bytes with {sent.describe()}, the source states "
                f"{item.size} with {item.checksums.describe()} and the bucket stored {checksums.describe()}; removed",
            )
        return Receipt(item.uri, self._uri(name), stream.bytes, sent.describe(), version=_generation(stored))

    def rewrite(self, item: SourceObject, *, overwrite: bool) -> Receipt | None:
        """The service copies a Cloud Storage object itself; None for a source elsewhere, which is streamed."""
        if not item.uri.startswith("gs://") or not item.version:
            return None
        from google.api_core import exceptions

        bucket, _, source_name = item.uri.removeprefix("gs://").partition("/")
        # The generation listed: a source replaced since is not found rather than copied.
        source = self._client.bucket(bucket).blob(source_name, generation=int(item.version))
        name = self._name(item)
        target = self._bucket.blob(name)
        token = None
        try:
            while True:  # a large object, or one that changes location or class, takes several calls
                token, _, _ = target.rewrite(source, token=token, if_generation_match=None if overwrite else 0)
                if token is None:
                    break
        except exceptions.PreconditionFailed as exc:
            raise StepError(409, f"{self._uri(name)}: appeared meanwhile; not overwritten") from exc
        except exceptions.GoogleAPIError as exc:
            raise StepError(*_failed(exc, f"{self._uri(name)}: copy from {item.uri} failed")) from None
        stored = Checksums.stated(target.crc32c, target.md5_hash)
        if target.size != item.size or stored.matches(item.checksums) is not True:
            self._remove(name, {"generation": target.generation})
            raise StepError(
                502,
                f"{self._uri(name)}: copied {target.size} bytes with {stored.describe()}, the source states "
                f"{item.size} with {item.checksums.describe()}; removed",
            )
        version = _generation({"generation": target.generation})
        return Receipt(item.uri, self._uri(name), item.size, stored.describe(), version=version)

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        self._http.close()  # nothing to publish: every object was final when sent
        return []

    def _blob(self, item: SourceObject, name: str) -> Any:
        blob = self._bucket.blob(name)
        blob.content_type = item.content_type
        blob.metadata = dict(item.metadata) or None
        # Stated up front, Cloud Storage itself refuses to finalize an object whose bytes do not match them.
        if item.checksums.crc32c:
            blob.crc32c = item.checksums.crc32c
        if item.checksums.md5:
            blob.md5_hash = item.checksums.md5
        return blob

    def _upload_small(self, item: SourceObject, name: str, stream: HashingReader, overwrite: bool) -> dict[str, Any]:
        from google.api_core import exceptions
        from google.resumable_media import DataCorruption

        blob = self._blob(item, name)
        try:
            blob.upload_from_file(
                stream,
                size=item.size,
                content_type=item.content_type,
                checksum="crc32c",  # the client checks the server's CRC32C of what arrived against the bytes sent
                if_generation_match=None if overwrite else 0,
            )
        except exceptions.PreconditionFailed as exc:
            raise StepError(409, f"{self._uri(name)}: appeared meanwhile; not overwritten") from exc
        except DataCorruption as exc:
            raise StepError(502, f"{self._uri(name)}: checksum mismatch after upload") from exc
        except exceptions.GoogleAPIError as exc:
            raise StepError(*_failed(exc, f"{self._uri(name)}: upload failed")) from None
        return {"crc32c": blob.crc32c, "md5Hash": blob.md5_hash, "generation": blob.generation, "size": blob.size}

    def _upload_streamed(self, item: SourceObject, name: str, stream: HashingReader, overwrite: bool) -> dict[str, Any]:
        from google.api_core import exceptions

        for _ in range(SESSIONS):
            try:
                session = self._blob(item, name).create_resumable_upload_session(
                    content_type=item.content_type,
                    size=item.size,
                    checksum=None,  # ours are stated in the metadata, and checked on the answer
                    if_generation_match=None if overwrite else 0,
                )
            except exceptions.PreconditionFailed as exc:
                raise StepError(409, f"{self._uri(name)}: appeared meanwhile; not overwritten") from exc
            except exceptions.GoogleAPIError as exc:
                raise StepError(*_failed(exc, f"{self._uri(name)}: upload failed")) from None
            try:
                stored = self._stream(session, item, name, stream)
            except BaseException:
                # Received bytes of an unfinished session are kept for a week; tell the service they never will be.
                with contextlib.suppress(requests.RequestException):
                    self._http.delete(session, timeout=TIMEOUT)
                raise
            if stored is not None:
                return stored
            stream.seek(0)
        raise StepError(502, f"{self._uri(name)}: the upload session ended without the object {SESSIONS} times")

    def _stream(self, session: str, item: SourceObject, name: str, stream: HashingReader) -> dict[str, Any] | None:
        """The stored object's resource; None when the session ended without it (start another)."""
        offset: int | None = 0  # None: ask the session where it stands
        failures, said = 0, ""
        while True:
            try:
                if offset is None:
                    answer = self._http.put(session, headers={"Content-Range": f"bytes */{item.size}"}, timeout=TIMEOUT)
                else:
                    if stream.tell() != offset:
                        stream.seek(offset)  # the source read again from there, the hashes brought back to it
                    answer = self._put(session, _Body(stream, item, offset))
            except requests.RequestException as exc:  # a cut connection, a timeout
                answer, said = None, type(exc).__name__
            if answer is not None:
                code = answer.status_code
                if code in (200, 201):
                    stored: dict[str, Any] = answer.json()
                    if int(stored.get("size", -1)) == item.size:
                        return stored
                    # Finalized short (fake-gcs-server finalizes on a status query): not ours to keep.
                    self._remove(name, stored)
                    return None
                if code in (404, 410):
                    return None  # the session expired or was closed
                if code == 412:
                    raise StepError(409, f"{self._uri(name)}: appeared meanwhile; not overwritten")
                if code == 308 and offset is None:
                    found = _RANGE.fullmatch(answer.headers.get("Range", ""))
                    offset = int(found.group(1)) + 1 if found else 0
                    continue
                if code != 308 and code not in (408, 429) and code < 500:
                    raise StepError(502, f"{self._uri(name)}: upload refused (HTTP {code}); not stored")
                said = f"HTTP {code}"
            failures += 1
            if failures >= ATTEMPTS:
                raise StepError(502, f"{self._uri(name)}: upload failed {failures} times ({said}); not stored")
            time.sleep(min(0.25 * 2**failures, 8.0))
            offset = None

    def _put(self, session: str, body: _Body) -> Any:
        size, start = body.size, body.start
        if start >= size:  # the session has every byte but was not finalized: the empty request that ends it
            body.check()
            return self._http.put(session, data=b"", headers={"Content-Range": f"bytes */{size}"}, timeout=TIMEOUT)
        headers = {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
        # An iterable with a length: sent with Content-Length in the pieces it yields, not chunk-encoded.
        return self._http.put(session, data=body, headers=headers, timeout=TIMEOUT)

    def _remove(self, name: str, stored: Mapping[str, Any]) -> None:
        from google.api_core import exceptions

        generation = stored.get("generation")
        if generation:
            with contextlib.suppress(exceptions.GoogleAPIError):
                self._bucket.blob(name).delete(if_generation_match=int(generation))


class _Body:
    """The object's bytes from `start` on, read from the source while the request sends them.

    The piece that completes the object waits until what was read adds up to the source's size and checksums:
    if it does not, the request ends before the service has the whole object, which is then never stored.
    """

    def __init__(self, stream: HashingReader, item: SourceObject, start: int) -> None:
        self.stream, self.item, self.start, self.size = stream, item, start, item.size

    def __len__(self) -> int:
        return self.size - self.start

    def __iter__(self) -> Iterator[bytes]:
        left = len(self)
        while left > 0:
            piece = self.stream.read(min(BUFFER, left))
            if not piece:
                raise StepError(
                    502, f"{self.item.uri}: ended at {self.stream.bytes} bytes, it states {self.size}; not stored"
                )
            left -= len(piece)
            if not left:
                self.check()
            yield piece

    def check(self) -> None:
        if self.stream.read(1):
            raise StepError(502, f"{self.item.uri}: holds more than the {self.size} bytes it states; not stored")
        check_read(self.item, self.stream, "not stored")


def _generation(stored: Mapping[str, Any]) -> str | None:
    """The generation the bucket answered, for the receipt: a number, or nothing (it is the server's word)."""
    generation = str(stored.get("generation"))
    return generation if generation.isdigit() and len(generation) <= 20 else None


def _failed(exc: Exception, what: str) -> tuple[int, str]:
    # The status, not the message: that is the server's answer. Not chained, as the cause would carry it.
    code = getattr(exc, "code", None)
    said = f"HTTP {int(code)}" if isinstance(code, int) else type(exc).__name__
    return (404 if code == 404 else 502), f"{what} ({said})"
