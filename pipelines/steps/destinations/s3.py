"""Destination: an S3-compatible bucket/prefix (AWS, MinIO), part by part, content type and metadata preserved."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import re
import tempfile
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit

from pipelines.steps.checksums import Checksums, HashingReader, etag_is_md5, md5_from_hex
from pipelines.steps.destinations import Presence, Receipt, check_read, known_options, required
from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.errors import StepError
from pipelines.steps.objects import CHUNK, SourceObject
from relay.urls import credentials_refusal, safe_for_credentials

MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
MAX_PARTS = 10_000  # S3's most parts in one upload
MIB = 1024 * 1024
IN_MEMORY = 16 * MIB  # a part up to this size is held in memory; a larger one is spooled to a temporary file
CRC32C_KEY = "relay-crc32c"  # user metadata (x-amz-meta-relay-crc32c): the sender's checksums, base64
MD5_KEY = "relay-md5"

_OPTIONS = frozenset({"endpoint", "bucket", "prefix", "access_key_id", "secret_access_key", "session_token", "region"})
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")
_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")
_ETAG = re.compile(r"[0-9a-f]{32}(-[0-9]{1,5})?")  # one part, or the MD5 of the parts' and their number
_VERSION = re.compile(r"[A-Za-z0-9._+=-]{1,200}")
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"})
_RACED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class S3Destination:
    """Objects become `prefix/name` in `bucket`.

    Small objects take one PutObject, larger ones a multipart upload of `part_size_for` pieces (one at a time,
    in memory up to IN_MEMORY, on disk beyond). Every request carries Content-MD5, which S3-compatible stores
    verify; the ETag the store answers is then compared with the MD5 (one part) or the MD5 of the part MD5s plus
    "-N" (multipart), except under SSE-KMS or SSE-C, whose ETags are no MD5. The sender's CRC32C and MD5 are kept
    in user metadata, so `check` can compare a multipart object too. Without `overwrite`, writes are create-only
    (If-None-Match: *): an object that appears between `check` and the write is not replaced.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any, part_size: int = CHUNK) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size: expected at least {MIN_PART} bytes (S3's smallest part), found {part_size}")
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._part_size = part_size

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, part_size: int = CHUNK, egress: Egress = STRICT
    ) -> S3Destination:
        known_options(options, _OPTIONS)
        bucket = required(options, "bucket", "s3")
        endpoint = _endpoint(options.get("endpoint"))
        if endpoint:
            # botocore dials out itself and resolves the name again: checked here, before any request is signed.
            # Left open: a DNS answer that changes between this check and botocore's connection (rebinding).
            egress.check(endpoint)
        client = make_client(
            endpoint=endpoint,
            region=str(options.get("region") or "us-east-1"),
            access_key_id=_secret(options, "access_key_id"),
            secret_access_key=_secret(options, "secret_access_key"),
            session_token=_secret(options, "session_token") if options.get("session_token") else None,
        )
        return cls(bucket, str(options.get("prefix") or ""), client=client, part_size=part_size)

    def _key(self, item: SourceObject) -> str:
        return f"{self._prefix}/{item.name}" if self._prefix else item.name

    def _uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(item)
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return Presence.ABSENT
            raise _refused(exc, self._uri(key)) from None  # see _refused: botocore's error may name the key id
        except BotoCoreError as exc:
            raise _unreachable(exc, self._uri(key)) from None
        # An object there whose checksums cannot be compared is not provably the same: only `overwrite` replaces it.
        return Presence.SAME if checksums.matches(_stored(head)) else Presence.DIFFERENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(item)
        _check_metadata(item, self._uri(key))
        part_size = part_size_for(item.size, self._part_size)
        try:
            if item.size <= part_size:
                answer, expected = self._put(item, key, stream, part_size, overwrite)
            else:
                answer, expected = self._multipart(item, key, stream, part_size, overwrite)
            self._verify_stored(key, answer, expected)
        except ClientError as exc:
            raise _refused(exc, self._uri(key)) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, self._uri(key)) from None
        etag = _kept(str(answer.get("ETag", "")).strip('"'))
        version = _kept(str(answer.get("VersionId") or ""))
        return Receipt(
            source=item.uri,
            destination=self._uri(key),
            bytes=stream.bytes,
            checksum=stream.checksums.describe(),
            # "null" is the version of an object written while versioning was off or suspended: not a version.
            version=version or etag,
        )

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        return []

    def _put(self, item: SourceObject, key: str, stream: HashingReader, size: int, overwrite: bool) -> tuple[Any, str]:
        body, _ = _spooled(stream, size)
        with body:
            stream.read(1)  # a source longer than it said shows here, and fails the check below
            check_read(item, stream, f"not stored at {self._uri(key)}")
            md5 = stream.checksums.md5 or ""  # the stream is read to its end: its checksums are the body's
            answer = self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=item.content_type,
                ContentMD5=md5,
                Metadata=_metadata(item, stream.checksums),
                **_create_only(overwrite),
            )
        return answer, base64.b64decode(md5).hex()

    def _multipart(
        self, item: SourceObject, key: str, stream: HashingReader, size: int, overwrite: bool
    ) -> tuple[Any, str]:
        upload = self._client.create_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            ContentType=item.content_type,
            # What the source states: the stream's own checksums are known only at its end, after this request.
            # `check_read` holds them to it before the upload is completed.
            Metadata=_metadata(item, item.checksums),
        )
        target = {"Bucket": self._bucket, "Key": key, "UploadId": upload["UploadId"]}
        parts: list[dict[str, Any]] = []
        digests: list[bytes] = []
        try:
            while True:
                part, digest = _spooled(stream, size)
                with part:  # one part at a time, and on disk once it is larger than IN_MEMORY
                    if not digest:
                        break
                    answer = self._client.upload_part(
                        **target, PartNumber=len(parts) + 1, Body=part, ContentMD5=base64.b64encode(digest).decode()
                    )
                _verify_etag(answer, digest.hex(), f"{self._uri(key)} (part {len(parts) + 1})")
                parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
                digests.append(digest)
            check_read(item, stream, f"not stored at {self._uri(key)}")
            answer = self._client.complete_multipart_upload(
                **target, MultipartUpload={"Parts": parts}, **_create_only(overwrite)
            )
        except BaseException:
            # Parts of an unfinished upload are stored (and billed) until aborted; if this fails too, a lifecycle
            # rule on incomplete uploads is what removes them.
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**target)
            raise
        return answer, f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"

    def _verify_stored(self, key: str, answer: Mapping[str, Any], expected: str) -> None:
        """After the write: an object whose ETag is not that of the bytes sent is removed again."""
        # Its metadata states the sender's checksums: left there, a re-run would take it for the same.
        try:
            _verify_etag(answer, expected, self._uri(key))
        except StepError as mismatch:
            version = answer.get("VersionId")
            try:
                self._client.delete_object(
                    Bucket=self._bucket, Key=key, **({"VersionId": version} if version and version != "null" else {})
                )
            except Exception:
                raise StepError(502, f"{mismatch}; it could not be removed: delete it before a re-run") from None
            raise StepError(502, f"{mismatch}; removed it") from None


def make_client(
    *, endpoint: str | None, region: str, access_key_id: str, secret_access_key: str, session_token: str | None
) -> Any:
    """An S3 client with exactly these keys: none are read from the process environment or a profile."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        signature_version="s3v4",
        # The endpoint given, or AWS's: never one from AWS_ENDPOINT_URL (the source store's) or a config file.
        ignore_configured_endpoint_urls=True,
        # Content-MD5 is what every S3-compatible store verifies; botocore's newer default CRC trailers are not.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
        # MinIO and most self-hosted stores serve buckets as paths, not as host names.
        s3={"addressing_style": "path"} if endpoint else None,
        # No proxy from HTTPS_PROXY and the like: it would connect for us, to an address the egress never checked.
        proxies={},
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


def _endpoint(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise StepError(400, f"destination.endpoint: expected a URL, found {type(value).__name__}")
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before @ would be a credential.
        raise StepError(
            400, "destination.endpoint: expected a URL without credentials (give access_key_id and secret_access_key)"
        )
    if safe_for_credentials(value):
        return value.rstrip("/")
    # Signed requests, a session token and the data itself would cross the network in clear.
    raise StepError(400, credentials_refusal("destination.endpoint", repr(value)))


def _secret(options: Mapping[str, Any], name: str) -> str:
    value = options.get(name)
    if not isinstance(value, str) or not value:
        # The value is not echoed, unlike `required`: it would be a credential.
        kind = "nothing" if value is None else f"a {type(value).__name__}"
        raise StepError(400, f"destination.{name}: expected a non-empty string (a secret:// reference), found {kind}")
    return value


def _check_metadata(item: SourceObject, uri: str) -> None:
    for name, value in item.metadata.items():
        if not (name + value).isascii():
            raise StepError(400, f"{uri}: metadata {name!r} is not ASCII, which S3 user metadata cannot hold")


def _metadata(item: SourceObject, checksums: Checksums) -> dict[str, str]:
    ours = {CRC32C_KEY: checksums.crc32c, MD5_KEY: checksums.md5}
    return {**item.metadata, **{name: value for name, value in ours.items() if value}}


def _create_only(overwrite: bool) -> dict[str, str]:
    return {} if overwrite else {"IfNoneMatch": "*"}


def part_size_for(size: int, smallest: int = CHUNK) -> int:
    """Parts grow with the object so that it fits in MAX_PARTS, in whole MiB, never under `smallest`."""
    needed = math.ceil(size / MAX_PARTS / MIB) * MIB
    return max(smallest, MIN_PART, needed)


def _spooled(stream: HashingReader, size: int) -> tuple[IO[bytes], bytes]:
    """The next `size` bytes (fewer only at the end) in a rewound file, and their MD5 (b"" when none were left).

    A part of a very large object is large (5 TiB / MAX_PARTS is 525 MiB): past IN_MEMORY it goes to disk, so
    memory stays bounded whatever the size. Botocore reads the file for its signature and again on a retry.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115 - returned, the caller closes it
    md5 = hashlib.md5(usedforsecurity=False)
    left = size
    while left and (piece := stream.read(min(CHUNK, left))):  # a network stream may return less than asked
        spool.write(piece)
        md5.update(piece)
        left -= len(piece)
    spool.seek(0)
    return spool, (md5.digest() if left < size else b"")


def _verify_etag(answer: Mapping[str, Any], expected: str, where: str) -> None:
    if not etag_is_md5(answer):
        return  # encrypted with KMS or a customer key: the ETag is no MD5, and Content-MD5 was checked on arrival
    etag = str(answer.get("ETag", "")).strip('"')
    if etag != expected:
        # The store's word: shown when it is an ETag, nothing else of it.
        said = f"ETag {etag!r}" if _ETAG.fullmatch(etag) else "an ETag that is no MD5"
        raise StepError(502, f"{where}: the store answered {said}, the bytes sent have {expected!r}")


def _stored(head: Mapping[str, Any]) -> Checksums:
    """What the store says of an object: Relay's metadata, else a one-part ETag (the MD5 of the bytes)."""
    metadata = head.get("Metadata") or {}
    etag = str(head.get("ETag", "")).strip('"')
    md5 = metadata.get(MD5_KEY) or (md5_from_hex(etag) if _MD5_HEX.fullmatch(etag) and etag_is_md5(head) else None)
    return Checksums(crc32c=metadata.get(CRC32C_KEY), md5=md5)


def _kept(value: str) -> str | None:
    """A version id or ETag the store answered, for a receipt: the store's word, kept only when it looks like one."""
    return value if _VERSION.fullmatch(value) and value != "null" else None


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _refused(exc: Any, uri: str) -> StepError:
    """A StepError for a store's error answer, from its status and code only.

    botocore's message and parsed error are not used, nor chained by callers: S3 answers InvalidAccessKeyId with
    the key id, and SignatureDoesNotMatch with the canonical request (which holds a session token).
    """
    status = _status(exc)
    code = str(exc.response.get("Error", {}).get("Code") or "")
    said = f"{status} {code}" if _CODE.fullmatch(code) and code != str(status) else str(status)
    if status == 403 or code in _DENIED:
        return StepError(
            403, f"{uri}: access denied ({said}): check the destination's keys and the bucket's policy for them"
        )
    if code == "NoSuchBucket":
        return StepError(404, f"{uri}: no such bucket ({said})")
    if status == 412 or code in _RACED:
        return StepError(409, f"{uri}: appeared meanwhile ({said}); not overwritten")
    if code in ("BadDigest", "InvalidDigest"):
        return StepError(502, f"{uri}: corrupted in transit: the store found another MD5 than sent ({said})")
    if 400 <= status < 500:
        return StepError(status, f"{uri}: the store refused the request ({said})")
    return StepError(502, f"{uri}: the store failed ({said})")


def _unreachable(exc: Exception, uri: str) -> StepError:
    return StepError(502, f"{uri}: no answer from the store ({type(exc).__name__})")
