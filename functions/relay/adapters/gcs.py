"""BlobStore on the Cloud Storage JSON API, over the instance's shared HTTP client.

One request per operation: python-storage costs ~0.18 s to import and sends bucket-metadata GETs of its own.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from urllib.parse import quote

from relay.adapters.http import DEFAULT_TIMEOUTS, HttpClient, NoAnswerError, Response, Timeouts, error_detail
from relay.adapters.tokens import NoTokenSource, bearer, call_with_token, default_token_source
from relay.errors import (
    BlobNotFoundError,
    BlobRequestError,
    PreconditionFailedError,
    StorageUnavailableError,
    UnauthorizedError,
)
from relay.naming import split_gs_uri
from relay.ports import Blob, BlobInfo, TokenSource

PUBLIC_ENDPOINT = "https://storage.googleapis.com"


def emulator_endpoint() -> str:
    """STORAGE_EMULATOR_HOST (fake-gcs-server), as python-storage honours it; "" for Cloud Storage itself."""
    return os.environ.get("STORAGE_EMULATOR_HOST", "").rstrip("/")


# The first page of a listing (see GcsBlobStore.list).
FIRST_PAGE = 100


class GcsBlobStore:
    """gs://bucket/name objects; generation preconditions are Cloud Storage's own (ifGenerationMatch)."""

    def __init__(
        self,
        http: HttpClient | None = None,
        tokens: TokenSource | None = None,
        *,
        endpoint: str = "",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        page_size: int = 1000,
    ) -> None:
        emulator = emulator_endpoint()
        self._endpoint = (endpoint or emulator or PUBLIC_ENDPOINT).rstrip("/")
        self._http = http or HttpClient()
        if tokens is None:
            # The emulator takes no token; anything else gets the machine's default credentials.
            tokens = NoTokenSource() if emulator and not endpoint else default_token_source(self._http)
        self._tokens = tokens
        self._timeouts = timeouts
        self._page_size = str(page_size)  # Cloud Storage's own maximum; tests page through smaller ones
        # A listing's first page is smaller: most listings stop early (a drain at the head of the queue, at the
        # first run that finds its cap full) and need not fetch a thousand names for it; a long one pays one
        # request more.
        self._first_page = str(min(page_size, FIRST_PAGE))

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        params = {"alt": "media", **({"generation": str(generation)} if generation is not None else {})}
        response = self._call("GET", self._object(uri), uri, params=params)
        # The x-goog-generation header tells which version was read.
        return Blob(response.data, int(response.headers.get("x-goog-generation") or generation or 0))

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        params = {"fields": "size,generation,contentType,metadata,updated"}
        if generation is not None:
            params["generation"] = str(generation)
        body = self._call("GET", self._object(uri), uri, params=params).json()
        content_type, metadata = body.get("contentType"), body.get("metadata") or {}
        return BlobInfo(
            size=int(body.get("size") or 0),
            generation=int(body["generation"]),
            content_type=content_type if isinstance(content_type, str) else None,
            # Cloud Storage's custom metadata is string to string; anything else is no metadata Relay can use.
            metadata={k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(metadata, dict)
            else {},
            updated=_time(body.get("updated")),
        )

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        bucket, name = split_gs_uri(uri)
        # A multipart upload (metadata, then the bytes): fake-gcs-server checks ifGenerationMatch on these only.
        boundary = uuid.uuid4().hex
        content_type = _content_type(uri)
        metadata = json.dumps({"name": name, "contentType": content_type}).encode()
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                metadata,
                f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        params = {"uploadType": "multipart", "fields": "generation", **_condition(if_generation_match)}
        response = self._call(
            "POST",
            f"{self._endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
            uri,
            params=params,
            body=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            conditional=if_generation_match is not None,
        )
        return int(response.json()["generation"])

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        with contextlib.suppress(BlobNotFoundError):  # absent is fine
            self._call("DELETE", self._object(uri), uri, params=_condition(if_generation_match))

    def list(self, prefix: str) -> Iterator[str]:
        bucket, name = split_gs_uri(prefix)
        url = f"{self._endpoint}/storage/v1/b/{quote(bucket, safe='')}/o"
        params = {"prefix": name, "maxResults": self._first_page, "fields": "items(name),nextPageToken"}
        while True:
            page = self._call("GET", url, prefix, params=params).json()
            for item in page.get("items") or []:
                yield f"gs://{bucket}/{item['name']}"
            if not page.get("nextPageToken"):
                return
            params = {**params, "maxResults": self._page_size, "pageToken": page["nextPageToken"]}

    def _object(self, uri: str) -> str:
        bucket, name = split_gs_uri(uri)
        return f"{self._endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"

    def _call(
        self,
        method: str,
        url: str,
        uri: str,
        *,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        conditional: bool = False,
    ) -> Response:
        """One request, errors mapped. One that repeats safely (a read, a delete, a conditional write) is sent once
        more when a kept connection proves stale, so a reply lost that way costs no redelivery; a create-only claim
        write repeated after it went through gets 412, and the service recognises its claim."""

        def send(token: str) -> Response:
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    body=body,
                    headers={**(headers or {}), **bearer(token)},
                    timeouts=self._timeouts,
                    repeatable=method != "POST" or conditional,
                )
            except NoAnswerError as exc:
                raise StorageUnavailableError(f"{uri}: Cloud Storage did not answer: {exc}") from exc
            if response.status == 401:
                raise UnauthorizedError(f"{uri}: Cloud Storage answered 401: {error_detail(response)}")
            return response

        return _checked(call_with_token(self._tokens, send), uri)


def _time(value: object) -> datetime | None:
    """An RFC 3339 time as Cloud Storage writes it; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _condition(generation: int | None) -> dict[str, str]:
    return {} if generation is None else {"ifGenerationMatch": str(generation)}


def _checked(response: Response, uri: str) -> Response:
    status = response.status
    if response.ok:
        return response
    detail = f"{uri}: Cloud Storage answered {status}: {error_detail(response)}"
    if status == 404:
        raise BlobNotFoundError(detail)
    if status == 412:
        raise PreconditionFailedError(f"{uri}: generation precondition failed")
    if status == 400:
        # A bad bucket name or generation: the same request can never succeed.
        raise BlobRequestError(detail)
    # 403s land here too: fixing IAM makes a redelivery succeed, and the event-age limit ends the retries.
    raise StorageUnavailableError(detail)


def _content_type(uri: str) -> str:
    """Records are JSON; reports are HTML (served as such from a bucket); history is JSON lines; triggers YAML too."""
    if uri.endswith(".json"):
        return "application/json"  # every record: mimetypes' table says the same, after reading the system's files
    if uri.endswith(".jsonl"):
        return "application/jsonl"
    if uri.endswith((".yaml", ".yml")):
        return "application/yaml"  # not in the stdlib's table
    return mimetypes.guess_type(uri)[0] or "application/json"
