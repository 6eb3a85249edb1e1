"""BlobStore on Cloud Storage, with generation preconditions mapped to python-storage's."""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relay.errors import BlobNotFoundError, PreconditionFailedError, StorageUnavailableError
from relay.naming import split_gs_uri
from relay.ports import Blob, BlobInfo

if TYPE_CHECKING:
    from google.cloud import storage


def default_client() -> storage.Client:
    from google.cloud import storage

    # With STORAGE_EMULATOR_HOST set the client goes anonymous to the emulator; otherwise ADC.
    return storage.Client()


class GcsBlobStore:
    """gs://bucket/name objects; the client is created on first use, once."""

    def __init__(self, client_factory: Callable[[], storage.Client] = default_client) -> None:
        self._client_factory = client_factory
        self._client: storage.Client | None = None
        self._lock = threading.Lock()

    def _blob(self, uri: str, generation: int | None = None) -> Any:
        with self._lock, _mapped_errors(uri):
            if self._client is None:
                self._client = self._client_factory()
        bucket, name = split_gs_uri(uri)
        return self._client.bucket(bucket).blob(name, generation=generation)

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        blob = self._blob(uri, generation)
        with _mapped_errors(uri):
            data = blob.download_as_bytes()
        # The download's x-goog-generation header tells which version was read.
        return Blob(data=data, generation=int(blob.generation or generation or 0))

    def stat(self, uri: str) -> BlobInfo:
        blob = self._blob(uri)
        with _mapped_errors(uri):
            blob.reload()
        return BlobInfo(size=int(blob.size or 0), generation=int(blob.generation))

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        blob = self._blob(uri)
        with _mapped_errors(uri):
            blob.upload_from_string(data, content_type=_content_type(uri), if_generation_match=if_generation_match)
        return int(blob.generation)

    def list(self, prefix: str) -> Iterator[str]:
        bucket, name = split_gs_uri(prefix)
        self._blob(prefix)  # makes the client
        with _mapped_errors(prefix):
            names = [blob.name for blob in self._client.list_blobs(bucket, prefix=name)]  # type: ignore[union-attr]
        return iter(f"gs://{bucket}/{n}" for n in names)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        blob = self._blob(uri)
        try:
            with _mapped_errors(uri):
                blob.delete(if_generation_match=if_generation_match)
        except BlobNotFoundError:
            pass


def _content_type(uri: str) -> str:
    """Records are JSON; reports are HTML (served as such from a bucket); history is JSON lines; triggers YAML too."""
    if uri.endswith(".jsonl"):
        return "application/jsonl"
    if uri.endswith((".yaml", ".yml")):
        return "application/yaml"  # not in the stdlib's table
    return mimetypes.guess_type(uri)[0] or "application/json"


@contextmanager
def _mapped_errors(uri: str) -> Iterator[None]:
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError
    from google.resumable_media import DataCorruption

    try:
        yield
    except exceptions.NotFound as exc:
        raise BlobNotFoundError(f"{uri}: no such object") from exc
    except exceptions.PreconditionFailed as exc:
        raise PreconditionFailedError(f"{uri}: generation precondition failed") from exc
    except (exceptions.GoogleAPIError, GoogleAuthError, DataCorruption, OSError) as exc:
        # 403s land here too: fixing IAM makes a redelivery succeed, and the event-age limit ends the retries.
        raise StorageUnavailableError(f"{uri}: Cloud Storage call failed: {exc}") from exc
