"""Destination: another Cloud Storage bucket/prefix, by resumable upload, content type and metadata preserved."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from pipelines.steps.checksums import Checksums, HashingReader
from pipelines.steps.contract import StepError
from pipelines.steps.destinations import Presence, Receipt, known_options, required
from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.objects import SourceObject

# Bigger requests cost memory (one chunk is held at a time) and save round trips; 32 MiB is the middle ground.
UPLOAD_CHUNK = 32 * 1024 * 1024


class GcsDestination:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        self._bucket = client.bucket(bucket)
        self._prefix = prefix.strip("/")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, egress: Egress = STRICT) -> GcsDestination:
        # `egress` is not consulted: the client talks to Cloud Storage's own host only, which no option changes.
        known_options(options, frozenset({"bucket", "prefix"}))
        return cls(required(options, "bucket", "gcs"), str(options.get("prefix", "")))

    def _name(self, item: SourceObject) -> str:
        return f"{self._prefix}/{item.name}" if self._prefix else item.name

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        blob = self._bucket.get_blob(self._name(item))
        if blob is None:
            return Presence.ABSENT
        same = checksums.matches(Checksums(crc32c=blob.crc32c, md5=blob.md5_hash))
        return Presence.SAME if same else Presence.DIFFERENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        from google.api_core import exceptions
        from google.resumable_media import DataCorruption

        name = self._name(item)
        # A chunk size makes the upload resumable, UPLOAD_CHUNK bytes per request: memory stays bounded.
        blob = self._bucket.blob(name, chunk_size=UPLOAD_CHUNK)
        blob.content_type = item.content_type
        blob.metadata = dict(item.metadata) or None
        # Stated up front, Cloud Storage itself refuses to finalize an object whose bytes do not match them.
        blob.crc32c, blob.md5_hash = item.checksums.crc32c, item.checksums.md5
        try:
            blob.upload_from_file(
                stream,
                size=item.size,
                content_type=item.content_type,
                checksum="crc32c",  # the client checks the server's CRC32C of what arrived against the bytes sent
                if_generation_match=None if overwrite else 0,
            )
        except exceptions.PreconditionFailed as exc:
            raise StepError(409, f"gs://{self._bucket.name}/{name}: appeared meanwhile; not overwritten") from exc
        except DataCorruption as exc:
            raise StepError(502, f"gs://{self._bucket.name}/{name}: checksum mismatch after upload: {exc}") from exc
        except exceptions.GoogleAPIError as exc:
            # The status, not the message: that is the server's answer. Not chained, as the cause would carry it.
            code = getattr(exc, "code", None)
            said = f"HTTP {int(code)}" if isinstance(code, int) else type(exc).__name__
            raise StepError(502, f"gs://{self._bucket.name}/{name}: upload failed ({said})") from None
        sent = stream.checksums
        stored = Checksums(crc32c=blob.crc32c, md5=blob.md5_hash)
        if stream.bytes != item.size or sent.matches(item.checksums) is False or sent.matches(stored) is False:
            # Never leave a wrong object behind: a re-run would take it for the source's and skip it.
            with contextlib.suppress(exceptions.GoogleAPIError):
                blob.delete(if_generation_match=blob.generation)
            raise StepError(
                502,
                f"gs://{self._bucket.name}/{name}: sent {stream.bytes} bytes with {sent.describe()}, the source states "
                f"{item.size} with {item.checksums.describe()} and the bucket stored {stored.describe()}; removed",
            )
        return Receipt(
            source=item.uri,
            destination=f"gs://{self._bucket.name}/{name}",
            bytes=stream.bytes,
            checksum=sent.describe(),
            version=str(blob.generation),
        )

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        return []
