"""One BlobStore for every URI Relay meets: gs:// to Cloud Storage, anything else to the local disk."""

from __future__ import annotations

from collections.abc import Iterator

from relay.ports import Blob, BlobInfo, BlobStore


class RoutingBlobStore:
    def __init__(self, gcs: BlobStore, local: BlobStore) -> None:
        self._gcs = gcs
        self._local = local

    def _for(self, uri: str) -> BlobStore:
        return self._gcs if uri.startswith("gs://") else self._local

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        return self._for(uri).read(uri, generation=generation)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._for(uri).stat(uri, generation=generation)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        return self._for(uri).write(uri, data, if_generation_match=if_generation_match)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._for(uri).delete(uri, if_generation_match=if_generation_match)

    def list(self, prefix: str) -> Iterator[str]:
        return self._for(prefix).list(prefix)
