"""Source objects under gs://, s3:// and file:// URIs: list them, and open each as a stream."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pipelines.steps.checksums import Checksums, s3_md5
from pipelines.steps.contract import StepError

CHUNK = 8 * 1024 * 1024  # read and write in 8 MiB pieces: memory stays bounded whatever the object size


@dataclass(frozen=True)
class SourceObject:
    """One object to copy: where it is, its name relative to the source URI, and what its store says of it."""

    uri: str
    name: str
    size: int
    checksums: Checksums
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    def list(self, uri: str) -> Iterator[SourceObject]:
        """Objects at `uri`; a URI ending in `/` means every object under it."""
        ...

    def open(self, item: SourceObject) -> BinaryIO:
        """A stream of the object's bytes; the caller closes it."""
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
            )

    def open(self, item: SourceObject) -> BinaryIO:
        bucket, _, name = item.uri.removeprefix("gs://").partition("/")
        blob = self._storage().bucket(bucket).blob(name)
        return blob.open("rb", chunk_size=CHUNK)  # type: ignore[no-any-return]


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
            keys = [entry["Key"] for page in pages for entry in page.get("Contents", [])]
        else:
            keys = [prefix]
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
            )

    def open(self, item: SourceObject) -> BinaryIO:
        parsed = urlsplit(item.uri)
        return self._s3().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]  # type: ignore[no-any-return]


class FileObjects:
    def list(self, uri: str) -> Iterator[SourceObject]:
        root = Path(uri.removeprefix("file://"))
        if not root.exists():
            raise StepError(404, f"{uri}: no such file or folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in paths:
            yield SourceObject(
                uri=path.as_uri(),
                name=path.relative_to(root).as_posix() if root.is_dir() else path.name,
                size=path.stat().st_size,
                checksums=Checksums(),
                content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            )

    def open(self, item: SourceObject) -> BinaryIO:
        # as_uri() percent-encodes the name (spaces, non-ASCII, %): decode it back to the path.
        return Path(url2pathname(urlsplit(item.uri).path)).open("rb")


def real_file_uri(uri: str) -> str:
    """A file:// URI with its symbolic links resolved, as the policy must judge it."""
    return Path(url2pathname(urlsplit(uri).path)).resolve().as_uri()


def store_for(uri: str, stores: Mapping[str, ObjectStore]) -> ObjectStore:
    scheme = urlsplit(uri).scheme or "file"
    if scheme not in stores:
        raise StepError(400, f"{uri}: expected a gs://, s3:// or file:// URI")
    return stores[scheme]


def default_stores() -> dict[str, ObjectStore]:
    return {"gs": GcsObjects(), "s3": S3Objects(), "file": FileObjects()}


def _relative(key: str, prefix: str, uri: str) -> str:
    """The name at the destination: the path under a folder URI, the base name of a single object."""
    if uri.endswith("/") or not prefix:
        return key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key
    return key.rsplit("/", 1)[-1]
