"""TokenSources: cached per instance, refreshed before they expire, fetched over the instance's shared HTTP client.

The metadata server is asked directly (one GET per token) rather than through google-auth's compute_engine module,
which costs ~0.12 s to import and two GETs per token; google-auth still reads service-account key files and
gcloud's Application Default Credentials, where those are what a machine has.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from relay.adapters.http import HttpClient, NoAnswerError, Response, Timeouts
from relay.errors import TokenUnavailableError, UnauthorizedError

if TYPE_CHECKING:
    from relay.config import Settings
    from relay.ports import TokenSource

T = TypeVar("T")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# Like google-auth, a token is renewed once less than this is left of it, so no request carries one about to lapse.
REFRESH_MARGIN = 225.0
_ACCOUNT = "/computeMetadata/v1/instance/service-accounts/default/"
_METADATA_TIMEOUTS = Timeouts(connect=1.0, read=5.0)  # a link-local server: slower than this, it is not there


class MetadataTokenSource:
    """Access tokens (or, with an audience, ID tokens) of the instance's service account from the metadata server."""

    def __init__(self, http: HttpClient, host: str, *, audience: str = "") -> None:
        leaf = "identity" if audience else "token"
        self._url = f"http://{host}{_ACCOUNT}{leaf}"
        self._params = {"audience": audience, "format": "full"} if audience else {"scopes": CLOUD_PLATFORM}
        self._what = f"metadata server {'ID token for ' + audience if audience else 'access token'} ({host})"
        self._http = http
        self._cached: tuple[str, float] | None = None  # token, and when to stop handing it out (time.time())

    def token(self, *, refresh: bool = False) -> str:
        cached = self._cached
        if cached is not None and not refresh and time.time() < cached[1]:
            return cached[0]
        # Fetched without a lock: concurrent events at expiry may each fetch one, but none waits on another's I/O.
        token, expires_at = self._fetch()
        self._cached = (token, expires_at - REFRESH_MARGIN)
        return token

    def _fetch(self) -> tuple[str, float]:
        try:
            response = self._http.request(
                "GET",
                self._url,
                params=self._params,
                headers={"Metadata-Flavor": "Google"},
                timeouts=_METADATA_TIMEOUTS,
            )
        except NoAnswerError as exc:
            raise TokenUnavailableError(f"{self._what}: no answer: {exc}") from exc
        if not response.ok:
            raise TokenUnavailableError(f"{self._what}: answered {response.status}: {response.text[:200]}")
        try:
            if "audience" in self._params:
                return response.text, _jwt_expiry(response.text)
            body = response.json()
            return str(body["access_token"]), time.time() + float(body["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailableError(f"{self._what}: unexpected answer: {exc}") from exc


def _jwt_expiry(token: str) -> float:
    """The `exp` claim of a JWT (read, not verified: the token is ours to send, not to trust)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


class CredentialsTokenSource:
    """Wraps google-auth Credentials, made on first use; `valid` turns false ~3m45s before expiry."""

    def __init__(self, credentials: Callable[[], Any], description: str, http: HttpClient) -> None:
        self._make = credentials
        self._credentials: Any = None
        self._description = description
        self._transport = _AuthTransport(http)
        self._lock = threading.Lock()  # guards the lazy construction only; refreshes run without it

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if self._credentials is None:
                self._credentials = self._make()
        credentials = self._credentials
        if refresh or not credentials.valid:
            self._refresh(credentials)
        return str(credentials.token)

    def _refresh(self, credentials: Any) -> None:
        import google.auth.exceptions

        try:
            credentials.refresh(self._transport)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise TokenUnavailableError(f"{self._description}: token refresh failed: {exc}") from exc


class _AuthTransport:
    """google.auth.transport.Request over the instance's HTTP client (google-auth's own wraps requests)."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response:
        import google.auth.exceptions

        # google-auth asks for 120 s by default; a token endpoint slower than the metadata bound is down.
        read = min(timeout or _METADATA_TIMEOUTS.read, _METADATA_TIMEOUTS.read)
        try:
            return self._http.request(
                method, url, body=body, headers=headers, timeouts=Timeouts(_METADATA_TIMEOUTS.connect, read)
            )
        except NoAnswerError as exc:
            raise google.auth.exceptions.TransportError(str(exc)) from exc


class StaticTokenSource:
    """A fixed token, for local use against a backend that takes one."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self, *, refresh: bool = False) -> str:
        return self._token


class NoTokenSource:
    """For servers that need no token (the local backend, an open KFP port-forward, the storage emulator)."""

    def token(self, *, refresh: bool = False) -> str:
        return ""


def metadata_host() -> str:
    # The variable google-auth honours, so tests and emulators point both at the same place.
    return os.environ.get("GCE_METADATA_HOST") or "metadata.google.internal"


def token_source_for(settings: Settings, http: HttpClient | None = None) -> TokenSource:
    """The backend's TokenSource that RELAY_AUTH names; building it fetches nothing."""
    http = http or HttpClient()
    if settings.auth == "none":
        return NoTokenSource()
    if settings.auth == "static":
        return StaticTokenSource(settings.static_token)
    if settings.auth == "metadata":
        return MetadataTokenSource(http, metadata_host())
    if settings.auth == "iap":
        return MetadataTokenSource(http, metadata_host(), audience=settings.kfp_audience)
    from google.oauth2 import service_account

    key_file = settings.credentials_file
    if settings.kfp_audience and settings.backend == "kfp":
        return CredentialsTokenSource(
            lambda: service_account.IDTokenCredentials.from_service_account_file(
                key_file, target_audience=settings.kfp_audience
            ),
            f"service-account ID token ({key_file})",
            http,
        )
    return CredentialsTokenSource(
        lambda: service_account.Credentials.from_service_account_file(key_file, scopes=[CLOUD_PLATFORM]),
        f"service-account access token ({key_file})",
        http,
    )


def default_token_source(http: HttpClient) -> TokenSource:
    """Application Default Credentials' access token, looked for where google.auth.default() looks, except that
    on Google Cloud (neither a key file nor a gcloud login here) the metadata server is asked directly."""
    configured = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    gcloud = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    if not configured and not (gcloud / "application_default_credentials.json").is_file():
        return MetadataTokenSource(http, metadata_host())

    def application_default() -> Any:
        import google.auth
        import google.auth.exceptions

        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        except google.auth.exceptions.GoogleAuthError as exc:
            raise TokenUnavailableError(f"Application Default Credentials: {exc}") from exc
        return credentials

    return CredentialsTokenSource(application_default, "Application Default Credentials", http)


def call_with_token(source: TokenSource, call: Callable[[str], T]) -> T:
    """Call with the cached token; after a 401, once more with a fresh one."""
    try:
        return call(source.token())
    except UnauthorizedError:
        pass
    try:
        return call(source.token(refresh=True))
    except UnauthorizedError as exc:
        raise TokenUnavailableError(f"the backend rejected a freshly fetched token too: {exc}") from exc


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for `token`; none when there is no token (emulators, an open port-forward)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
