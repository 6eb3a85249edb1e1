"""CRC32C and MD5 as Cloud Storage and S3 state them, computed while bytes stream through."""

from __future__ import annotations

import base64
import hashlib
import io
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import google_crc32c

# A resumed upload goes back to what the server kept, which trails what was sent by about what is in flight.
SNAPSHOT_EVERY = 4 * 1024 * 1024
STATES_KEPT = 64  # 256 MiB back; further back, the hashes start again from byte 0 (read again, not sent again)
SEEK_PIECE = 1024 * 1024


@dataclass(frozen=True)
class Checksums:
    """Either may be unknown (None); `matches` compares what both sides know."""

    crc32c: str | None = None  # base64 of the big-endian 4 bytes, as Cloud Storage states it
    md5: str | None = None  # base64 of the 16 bytes, as Cloud Storage states it (S3's ETag is the hex)

    @classmethod
    def stated(cls, crc32c: object, md5: object) -> Checksums:
        """Checksums a remote store stated: each kept only when it is one (the base64 of 4 or 16 bytes), as they
        go into messages and a store's other words never do."""
        return cls(crc32c=_digest_or_none(crc32c, 4), md5=_digest_or_none(md5, 16))

    def matches(self, other: Checksums) -> bool | None:
        """True or False on the first checksum both know; None when they share none."""
        for mine, theirs in ((self.crc32c, other.crc32c), (self.md5, other.md5)):
            if mine is not None and theirs is not None:
                return mine == theirs
        return None

    def describe(self) -> str:
        return f"crc32c={self.crc32c}" if self.crc32c else f"md5={self.md5}" if self.md5 else "none"


def _digest_or_none(value: object, size: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return value if len(digest) == size else None


def md5_from_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def etag_is_md5(answer: Mapping[str, Any]) -> bool:
    """Whether an S3 answer's ETag is the MD5 of the bytes: not with KMS or customer-key encryption."""
    return not answer.get("SSECustomerAlgorithm") and answer.get("ServerSideEncryption") not in (
        "aws:kms",
        "aws:kms:dsse",
    )


def s3_md5(answer: Mapping[str, Any]) -> str | None:
    """The object's MD5 (base64) when its ETag is one: a single-part upload, and no KMS or customer key."""
    etag = str(answer.get("ETag", "")).strip('"')
    if not etag or "-" in etag or not etag_is_md5(answer):  # a multipart ETag ("...-N") is no MD5 of the bytes
        return None
    return md5_from_hex(etag)


class HashingReader:
    """Wraps a readable stream: counts bytes and computes CRC32C and MD5 of everything read through it.

    It can go back (`seek`) when its stream can, as a resumed upload needs: the hashes are restored from a state
    kept every `every` bytes (the last `kept` of them, else from byte 0) and brought forward by reading again, so
    they always cover the bytes from 0 to where it is, once each and in order.
    """

    def __init__(self, stream: BinaryIO, *, every: int = SNAPSHOT_EVERY, kept: int = STATES_KEPT) -> None:
        self._stream = stream
        self._every = every
        self._crc = google_crc32c.Checksum()
        self._md5 = _md5()
        self.bytes = 0
        # Hash states at earlier offsets; only the latest few, so memory stays bounded whatever the size.
        self._states: deque[tuple[int, Any, Any]] = deque(maxlen=kept)

    def read(self, size: int = -1) -> bytes:
        if self.bytes >= (self._states[-1][0] if self._states else 0) + self._every:
            self._states.append((self.bytes, self._crc.copy(), self._md5.copy()))
        chunk = self._stream.read(size)
        if chunk:
            self._crc.update(chunk)
            self._md5.update(chunk)
            self.bytes += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.bytes

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Go to `offset`: back from the nearest kept state (or the start), forward by reading and hashing."""
        target = offset + (self.bytes if whence == io.SEEK_CUR else 0)
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < 0:
            raise io.UnsupportedOperation(f"a streamed source cannot seek to {offset} (whence {whence})")
        if target < self.bytes:
            while self._states and self._states[-1][0] > target:
                self._states.pop()
            fresh = (0, google_crc32c.Checksum(), _md5())
            at, crc, md5 = self._states[-1] if self._states else fresh
            if not self._stream.seekable():
                raise io.UnsupportedOperation(f"a streamed source cannot go back to {target}")
            self._stream.seek(at)
            self._crc, self._md5, self.bytes = crc.copy(), md5.copy(), at
        while self.bytes < target:
            if not self.read(min(target - self.bytes, SEEK_PIECE)):
                raise io.UnsupportedOperation(f"the source ended at {self.bytes} bytes, before {target}")
        return self.bytes

    @property
    def checksums(self) -> Checksums:
        return Checksums(
            crc32c=base64.b64encode(self._crc.digest()).decode(), md5=base64.b64encode(self._md5.digest()).decode()
        )


def of_bytes(data: bytes) -> Checksums:
    md5 = _md5()
    md5.update(data)
    return Checksums(
        crc32c=base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
        md5=base64.b64encode(md5.digest()).decode(),
    )


def _md5() -> Any:
    # An integrity check, not security: allowed where a FIPS-mode OpenSSL refuses MD5 for security.
    return hashlib.md5(usedforsecurity=False)
