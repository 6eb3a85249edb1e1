"""Destination: an ELN/LIMS-style REST endpoint, one request per object (raw or multipart), retried with backoff."""

from __future__ import annotations

import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from pipelines.steps.checksums import Checksums, HashingReader, md5_from_hex
from pipelines.steps.destinations import Presence, Receipt, check_read, known_options, required
from pipelines.steps.egress import STRICT, Egress, status_line
from pipelines.steps.errors import StepError
from pipelines.steps.objects import CHUNK, SourceObject
from relay.urls import credentials_refusal, safe_for_credentials
from relay.waits import retry_after

_OPTIONS = frozenset({"url", "method", "headers", "body", "field", "max_attempts", "timeout", "exists_url"})
_PIECE = 1024 * 1024  # spooling reads this much at a time
_FIRST_WAIT = 1.0  # seconds before the second attempt; doubled for each one after
_MAX_WAIT = 120.0  # longest wait between attempts, Retry-After included: the step holds a worker while it waits
_ANSWER_HEAD = 64 * 1024  # what is read of an answer's body: enough for the id of what was made
# Ceilings of the adapter's own, whatever the policy allows: a step must end, and its waits are bounded by these.
MAX_ATTEMPTS = 20
MAX_TIMEOUT = 600.0
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP header name
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
     "forwarded", "x-real-ip"}
)  # fmt: skip
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")
_MAX_VERSION = 200  # characters of a version (an id, a Location's path) a receipt keeps

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    head: bytes  # the first _ANSWER_HEAD bytes of the body


class HttpDestination:
    """Sends each object in one request to `url` (`{name}` there becomes the object's name, URL-quoted).

    The body is the object's bytes with its content type (`raw`) or one multipart/form-data part named `field`
    whose filename is the object's name (`multipart`). Only a 2xx answer is success. 429 and 5xx answers are
    retried, up to `max_attempts` attempts in all, waiting as Retry-After says or else 1, 2, 4... seconds; so are
    failed connections when the request cannot have arrived (or the method is PUT, which may be repeated). A
    streamed source cannot be read twice, so each object is first spooled: in memory up to CHUNK bytes, else to
    an unnamed temporary file that is gone as soon as it is closed. Redirects are not followed (the body would
    not be resent). Connections go only where `egress` allows, to the address it checked. Error messages name the
    headers sent, never their values (they hold tokens), and state an answer's status, never its body.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        body: str = "raw",
        field: str = "file",
        max_attempts: int = 5,
        timeout: float = 60.0,
        exists_url: str | None = None,
        sleep: Sleep = time.sleep,
        egress: Egress = STRICT,
    ) -> None:
        self._url = url
        self._method = method
        self._headers = dict(headers or {})
        self._body = body
        self._field = field
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._exists_url = exists_url
        self._sleep = sleep
        # Pinned to checked addresses; it reads no proxy or ~/.netrc from the environment, only its CA bundle.
        self._session = egress.session()

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, sleep: Sleep = time.sleep, egress: Egress = STRICT
    ) -> HttpDestination:
        known_options(options, _OPTIONS)
        method = str(options.get("method") or "POST").upper()
        if method not in ("POST", "PUT"):
            raise StepError(400, f"destination.method: expected POST or PUT, found {method!r}")
        body = str(options.get("body") or "raw")
        if body not in ("raw", "multipart"):
            raise StepError(400, f"destination.body: expected raw or multipart, found {body!r}")
        url = _url(options, "url")
        exists_url = _url(options, "exists_url") if options.get("exists_url") else None
        for checked in (url, exists_url):
            if checked:
                egress.check(checked)  # a refused host fails the push now, before any source is read
        return cls(
            url,
            method=method,
            headers=_headers(options.get("headers")),
            body=body,
            field=required(options, "field", "http") if "field" in options else "file",
            max_attempts=int(_number(options, "max_attempts", 5, MAX_ATTEMPTS, integer=True)),
            timeout=_number(options, "timeout", 60.0, MAX_TIMEOUT),
            exists_url=exists_url,
            sleep=sleep,
            egress=egress,
        )

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        """ABSENT unless `exists_url` is given: HTTP has no standard way to ask whether an upload is there.

        With `exists_url`, a HEAD there answers: 404 or 410 is ABSENT; a 2xx is compared on its Content-MD5,
        X-Checksum-CRC32C or ETag (when it is an MD5 in hex), and is DIFFERENT when it states none of them, as the
        object is there but not provably the same.
        """
        if self._exists_url is None:
            return Presence.ABSENT
        url = _named(self._exists_url, item.name)
        answer = self._exchange("HEAD", url, lambda: (None, None))
        if answer.status in (404, 410):
            return Presence.ABSENT
        if not 200 <= answer.status < 300:
            raise self._refused("HEAD", url, answer)
        return Presence.SAME if checksums.matches(_stated(answer.headers)) else Presence.DIFFERENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        url = _named(self._url, item.name)
        with _spooled(stream, item.size) as spool:
            check_read(item, stream, f"not sent to {_public(url)}")
            answer = self._exchange(self._method, url, lambda: self._payload(item, spool), overwrite=overwrite)
        if not 200 <= answer.status < 300:
            raise self._refused(self._method, url, answer, overwrite=overwrite)
        return Receipt(
            source=item.uri,
            destination=_public(url),
            bytes=stream.bytes,
            checksum=stream.checksums.describe(),
            version=_version(answer),
        )

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        self._session.close()
        return []

    def _payload(self, item: SourceObject, spool: IO[bytes]) -> tuple[Any, str]:
        """A fresh body over the spool, for one attempt, with its content type."""
        spool.seek(0)
        if self._body == "multipart":
            from requests_toolbelt import MultipartEncoder

            # Streams the spool in pieces, with a known length: no chunked encoding, which many servers refuse.
            encoder = MultipartEncoder(fields={self._field: (item.name, spool, item.content_type)})
            return encoder, str(encoder.content_type)
        given = next((value for name, value in self._headers.items() if name.lower() == "content-type"), None)
        return spool, given or item.content_type

    def _exchange(
        self,
        method: str,
        url: str,
        payload: Callable[[], tuple[Any, str | None]],
        *,
        overwrite: bool = True,
    ) -> _Answer:
        """The first answer that is not 429 or 5xx; a StepError once `max_attempts` attempts have had none."""
        failure = ""
        for attempt in range(1, self._max_attempts + 1):
            data, content_type = payload()
            headers = dict(self._headers)
            if content_type:
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                headers["Content-Type"] = content_type
            if method == "PUT" and not overwrite:
                headers["If-None-Match"] = "*"  # create only: a named resource that is there already is kept
            try:
                with self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                    stream=True,
                ) as response:
                    answer = _Answer(
                        response.status_code,
                        {name.lower(): value for name, value in response.headers.items()},
                        b"" if method == "HEAD" or response.status_code >= 300 else _head(response),
                    )
            except requests.RequestException as exc:
                # Not chained: requests' messages repeat the URL with its query, where some endpoints take a token.
                if not (_unsent(exc) or method in ("PUT", "HEAD")):
                    raise StepError(
                        502,
                        f"{method} {_public(url)}: no answer ({type(exc).__name__}); not retried, as the request "
                        "may have arrived",
                    ) from None
                failure, wait = f"no answer ({type(exc).__name__})", None
            else:
                if answer.status != 429 and answer.status < 500:
                    return answer
                failure = f"answered {status_line(answer.status)}"
                wait = retry_after(answer.headers.get("retry-after"), datetime.now(UTC))
            if attempt < self._max_attempts:
                self._sleep(min(_MAX_WAIT, _FIRST_WAIT * 2 ** (attempt - 1) if wait is None else wait))
        raise StepError(
            502, f"{method} {_public(url)}: no success in {self._max_attempts} attempt(s); the last {failure}"
        )

    def _refused(self, method: str, url: str, answer: _Answer, *, overwrite: bool = True) -> StepError:
        """The answer's status line and Relay's explanation; never its body or reason phrase, which the server wrote."""
        where = f"{method} {_public(url)}"
        said = status_line(answer.status)
        if 300 <= answer.status < 400:
            # Where it points is the server's word (careless ones put the token there): only its origin is named.
            target = _origin(answer.headers.get("location", ""), url) or "elsewhere"
            return StepError(
                400, f"{where}: answered {said} to {target}; redirects are not followed, give the URL it leads to"
            )
        if answer.status in (401, 403):
            names = ", ".join(sorted(self._headers)) or "none"
            return StepError(answer.status, f"{where}: answered {said}; headers sent: {names} (values not shown)")
        if answer.status == 412 and method == "PUT" and not overwrite:
            return StepError(409, f"{where}: answered {said}: something is there already; set overwrite to replace it")
        return StepError(answer.status if 400 <= answer.status < 500 else 502, f"{where}: answered {said}")


def _head(response: requests.Response) -> bytes:
    return next(response.iter_content(_ANSWER_HEAD), b"")


@contextmanager
def _spooled(stream: HashingReader, size: int) -> Iterator[IO[bytes]]:
    """The whole stream, to be read again for a retry: in memory up to CHUNK bytes, else in a temporary file."""
    # TemporaryFile has no name in the folder (unlinked at once), so nothing is left even if the step is killed.
    with io.BytesIO() if size <= CHUNK else tempfile.TemporaryFile(prefix="relay-http-") as spool:
        # Past the stated size the source has changed (the check after fails it): stop, so memory stays bounded.
        while stream.bytes <= size and (piece := stream.read(_PIECE)):
            spool.write(piece)
        yield spool


def _unsent(exc: requests.RequestException) -> bool:
    """Whether the connection never opened, so that the request cannot have arrived and may be sent again."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)


def _named(url: str, name: str) -> str:
    # Quoted whole, "/" too: a nested name stays one path segment and cannot climb out of the URL's path.
    return url.replace("{name}", quote(name, safe=""))


def _public(url: str) -> str:
    """The URL without credentials or query, which may hold tokens: what messages and receipts show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{netloc}{port}{parts.path}" if parts.scheme else parts.path


def _version(answer: _Answer) -> str | None:
    """What the server calls the upload: the path of its Location, or the `id` of its JSON answer.

    The server's word, kept as a receipt's version only when it looks like one: printable, without a query (where
    tokens go), at most _MAX_VERSION characters (never cut short: a cut token would be a token in part). The step
    scrubs secrets out of it like out of everything it writes.
    """
    location = answer.headers.get("location")
    if location:
        parts = urlsplit(location)
        return _bounded(_public(location) if parts.scheme else parts.path)
    if "json" in answer.headers.get("content-type", ""):
        try:
            document = json.loads(answer.head)
        except ValueError:
            return None
        found = document.get("id") if isinstance(document, dict) else None
        if isinstance(found, str) or (isinstance(found, int) and not isinstance(found, bool)):
            return _bounded(str(found))
    return None


def _bounded(value: str) -> str | None:
    return value if 0 < len(value) <= _MAX_VERSION and value.isprintable() else None


def _origin(location: str, base: str) -> str:
    """`scheme://host[:port]` of where a redirect points (relative: the request's own), nothing of its path."""
    parts = urlsplit(location)
    if not parts.scheme:
        parts = urlsplit(base)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}" if parts.scheme in ("http", "https") and host else ""


def _stated(headers: Mapping[str, str]) -> Checksums:
    etag = headers.get("etag", "").strip('"')  # a weak ETag (W/"...") is no MD5 and fails the match below
    md5 = headers.get("content-md5") or (md5_from_hex(etag.lower()) if _MD5_HEX.fullmatch(etag) else None)
    return Checksums(crc32c=headers.get("x-checksum-crc32c"), md5=md5)


def _url(options: Mapping[str, Any], name: str) -> str:
    url = required(options, name, "http")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise StepError(400, f"destination.{name}: expected a URL without credentials (send them as headers)")
    if safe_for_credentials(url):
        return url
    # Headers hold tokens: they cross the network only encrypted.
    raise StepError(400, credentials_refusal(f"destination.{name}", _public(url)))


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StepError(
            400, f"destination.headers: expected an object of names and values, found {type(value).__name__}"
        )
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise StepError(400, f"destination.headers: expected header names, found {name!r}")
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith(("proxy-", "x-forwarded-")):
            # Routing and framing are the step's: a Host header would reach another virtual host behind the
            # address the policy allowed, a Content-Length or Transfer-Encoding would smuggle a second request.
            raise StepError(400, f"destination.headers.{name}: expected a header the step does not set itself")
        # The value is never echoed: it may be a token. requests would, in its own error.
        if not isinstance(text, str) or not text.isprintable():
            raise StepError(400, f"destination.headers.{name}: expected a one-line string value (not shown)")
        headers[name] = text
    return headers


def _number(options: Mapping[str, Any], name: str, default: float, ceiling: float, *, integer: bool = False) -> float:
    value = options.get(name, default)
    number = None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)
    if number is None or not 0 < number <= ceiling or (integer and number != int(number)):
        expected = f"a whole number from 1 to {ceiling:g}" if integer else f"seconds above 0, at most {ceiling:g}"
        raise StepError(400, f"destination.{name}: expected {expected}, found {value!r}")
    return number
