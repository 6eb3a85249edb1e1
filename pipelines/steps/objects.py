"""Source objects under gs://, s3:// and file:// URIs: list them, and open each as a stream."""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pipelines.steps import localfile
from pipelines.steps.checksums import Checksums, s3_md5
from pipelines.steps.errors import StepError

CHUNK = 8 * 1024 * 1024  # read and write in 8 MiB pieces: memory stays bounded whatever the object size
READ_BUFFER = 1024 * 1024  # what a resuming reader holds between the store's stream and its reader


@dataclass(frozen=True)
class SourceObject:
    """One object to copy: where it is, its name relative to the source URI, and what its store says of it."""

    uri: str
    name: str
    size: int
    checksums: Checksums
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The generation (gs) or ETag (s3) listed: every read, a resumed one too, must find these very bytes.
    version: str | None = None


class ObjectStore(Protocol):
    def list(self, uri: str) -> Iterator[SourceObject]:
        """Objects at `uri`; a URI ending in `/` means every object under it."""
        ...

    def open(self, item: SourceObject, offset: int = 0) -> BinaryIO:
        """A stream of the object's bytes from `offset` on; the caller closes it."""
        ...


class GcsObjects:
    def __init__(self, client: Any = None) -> None:
        self._client = client

    def _storage(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client()
        return self._client

    def list(self, uri: str) -> Iterator[SourceObject]:
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        if uri.endswith("/") or not prefix:
            blobs = self._storage().list_blobs(bucket, prefix=prefix)
        else:
            blob = self._storage().bucket(bucket).get_blob(prefix)
            if blob is None:
                raise StepError(404, f"{uri}: no such object")
            blobs = [blob]
        for blob in blobs:
            if blob.name.endswith("/") and not blob.size:
                continue  # a folder placeholder
            yield SourceObject(
                uri=f"gs://{bucket}/{blob.name}",
                name=_relative(blob.name, prefix, uri),
                size=int(blob.size or 0),
                checksums=Checksums(crc32c=blob.crc32c, md5=blob.md5_hash),
                content_type=blob.content_type or "application/octet-stream",
                metadata=dict(blob.metadata or {}),
                version=str(blob.generation) if blob.generation else None,
            )

    def open(self, item: SourceObject, offset: int = 0) -> BinaryIO:
        """One streamed GET of the listed generation from `offset` on, not a request per chunk (blob.open)."""
        if offset >= item.size:
            return io.BytesIO(b"")
        bucket, _, name = item.uri.removeprefix("gs://").partition("/")
        client = self._storage()
        blob = client.bucket(bucket).blob(name)
        params = {"alt": "media", **({"generation": item.version} if item.version else {})}
        # The stored bytes, as their checksums state them: a gzip-encoded object is not decompressed on the way.
        headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "gzip"}
        # The client's own authorized session (`_http`): the token it refreshes, the endpoint it was made for.
        # Private, no public equivalent: pinned by tests/pipelines/test_library_contracts.py.
        url = f"{client.api_endpoint}/download/storage/v1{blob.path}"
        answer = client._http.get(url, params=params, headers=headers, stream=True, timeout=(30, 120))
        if answer.status_code not in (200, 206):
            answer.close()
            gone = answer.status_code == 404
            said = "no longer there as listed" if gone else f"read failed (HTTP {answer.status_code})"
            raise StepError(404 if gone else 502, f"{item.uri}: {said}")
        if answer.status_code == 200 and offset:
            answer.close()
            raise StepError(502, f"{item.uri}: asked for bytes from {offset}, the store sent the whole object")
        return io.BufferedReader(_Body(answer), buffer_size=READ_BUFFER)


class S3Objects:
    """S3 and S3-compatible stores; endpoint and keys from the standard AWS_* environment."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    def _s3(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        return self._client

    def list(self, uri: str) -> Iterator[SourceObject]:
        parsed = urlsplit(uri)
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        if uri.endswith("/") or not prefix:
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            # A page at a time, never the whole listing: a prefix may hold millions of keys.
            keys: Iterator[str] = (entry["Key"] for page in pages for entry in page.get("Contents", []))
        else:
            keys = iter([prefix])
        for key in keys:
            if key.endswith("/"):
                continue
            head = self._s3().head_object(Bucket=bucket, Key=key)
            yield SourceObject(
                uri=f"s3://{bucket}/{key}",
                name=_relative(key, prefix, uri),
                size=int(head["ContentLength"]),
                checksums=Checksums(md5=s3_md5(head)),
                content_type=head.get("ContentType") or "application/octet-stream",
                metadata=dict(head.get("Metadata") or {}),
                version=head.get("ETag") or None,
            )

    def open(self, item: SourceObject, offset: int = 0) -> BinaryIO:
        if offset >= item.size:
            return io.BytesIO(b"")
        parsed = urlsplit(item.uri)
        where = {"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")}
        if offset:
            where["Range"] = f"bytes={offset}-"
        if item.version:
            where["IfMatch"] = item.version  # the object as listed, or a 412: never two objects' bytes mixed
        from botocore.exceptions import ClientError

        try:
            return self._s3().get_object(**where)["Body"]  # type: ignore[no-any-return]
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status in (404, 412):  # the store's answer, which asking again would not change
                said = "no longer there" if status == 404 else "changed since it was listed"
                raise StepError(404 if status == 404 else 502, f"{item.uri}: {said}") from None
            raise


class FileObjects:
    """Local files, listed and opened beneath the allowed folders (`roots`, file:// locations; None: beneath /) and
    never through a symbolic link (see localfile). A listed file's identity is its version: every later open, a
    resumed one too, must find that very file, as a generation pins a gs:// read."""

    def __init__(self, roots: Sequence[str] | None = None, resolver: localfile.Resolver | None = None) -> None:
        self._roots = None if roots is None else tuple(r for r in roots if r.startswith("file:"))
        self._resolver = resolver  # None: openat2 where the kernel has it, else the walk

    def list(self, uri: str) -> Iterator[SourceObject]:
        path = uri.removeprefix("file://")
        found = localfile.open_path(path, self._roots, where=uri, resolver=self._resolver)
        try:
            if stat.S_ISDIR(found.info.st_mode):
                for name, info in localfile.entries(found.fd):
                    yield _local_object(Path(path, name), name, info)
            else:
                yield _local_object(Path(path), Path(path).name, found.info)
        finally:
            os.close(found.fd)

    def open(self, item: SourceObject, offset: int = 0) -> BinaryIO:
        # as_uri() percent-encodes the name (spaces, non-ASCII, %): decode it back to the path.
        path = url2pathname(urlsplit(item.uri).path)
        found = localfile.open_path(path, self._roots, where=item.uri, resolver=self._resolver)
        try:
            localfile.check_file(found, where=item.uri)
            if item.version is not None and localfile.identity(found.info) != item.version:
                raise StepError(502, f"{item.uri}: another file than the one listed is there now")
            return localfile.reader(found, offset)
        except BaseException:
            os.close(found.fd)
            raise


def _local_object(path: Path, name: str, info: os.stat_result) -> SourceObject:
    """A listed entry; one that is not a regular file (a link, a FIFO) has no version, and its open refuses it."""
    return SourceObject(
        uri=path.as_uri(),
        name=name,
        size=info.st_size,
        checksums=Checksums(),
        content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        version=localfile.identity(info) if stat.S_ISREG(info.st_mode) else None,
    )


def resuming(store: ObjectStore, item: SourceObject, *, attempts: int = 5) -> BinaryIO:
    """The object's bytes, read again from where they broke off when a read fails; seekable (by re-opening).

    A connection cut mid-object costs what was in flight, not the object: the store is asked for the rest only.
    """
    return io.BufferedReader(_Resuming(store, item, attempts), buffer_size=READ_BUFFER)


class _Resuming(io.RawIOBase):
    def __init__(self, store: ObjectStore, item: SourceObject, attempts: int) -> None:
        self._store, self._item, self._attempts = store, item, attempts
        self._stream: BinaryIO | None = None
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self._position if whence == io.SEEK_CUR else 0)
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < 0:
            raise io.UnsupportedOperation(f"{self._item.uri}: cannot seek to {offset} (whence {whence})")
        if target != self._position:
            self._drop()  # opened again at the new position on the next read
            self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        failures = 0
        while True:
            try:
                if self._stream is None:
                    self._stream = self._store.open(self._item, self._position)
                data = self._stream.read(len(buffer))
            except StepError:
                raise  # the store's own answer (gone, refused): reading again would find the same
            except Exception:
                # A cut connection or a stalled read: whatever the client library calls it, ask again from here.
                failures += 1
                self._drop()
                if failures >= self._attempts:
                    raise
                time.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if not data and self._position < self._item.size and failures + 1 < self._attempts:
                failures += 1  # ended early without an error: once more from here, then believe it
                self._drop()
                continue
            buffer[: len(data)] = data
            self._position += len(data)
            return len(data)

    def close(self) -> None:
        self._drop()
        super().close()

    def _drop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None


class _Body(io.RawIOBase):
    """A streamed HTTP answer's bytes as they arrived, closed with the answer."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data: bytes = self._answer.raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._answer.close()
        super().close()


def store_for(uri: str, stores: Mapping[str, ObjectStore]) -> ObjectStore:
    scheme = urlsplit(uri).scheme or "file"
    if scheme not in stores:
        raise StepError(400, f"{uri}: expected a gs://, s3:// or file:// URI")
    return stores[scheme]


def default_stores(local_roots: Sequence[str] | None = None) -> dict[str, ObjectStore]:
    """The stores a step reads from; local files only beneath `local_roots` (the tenant's allowed folders)."""
    return {"gs": GcsObjects(), "s3": S3Objects(), "file": FileObjects(local_roots)}


def _relative(key: str, prefix: str, uri: str) -> str:
    """The name at the destination: the path under a folder URI, the base name of a single object."""
    if uri.endswith("/") or not prefix:
        return key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key
    return key.rsplit("/", 1)[-1]
