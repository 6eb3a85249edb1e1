"""TokenSources: google-auth credentials cached per instance and refreshed before they expire."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from relay.errors import TokenUnavailableError, UnauthorizedError

if TYPE_CHECKING:
    from relay.config import Settings
    from relay.ports import TokenSource

T = TypeVar("T")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class CredentialsTokenSource:
    """Wraps any google-auth Credentials; `valid` turns false ~3m45s before expiry, so refresh comes early."""

    def __init__(self, credentials: Any, description: str) -> None:
        self._credentials = credentials
        self._description = description
        self._lock = threading.Lock()
        self._request: Any = None

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh or not self._credentials.valid:
                self._refresh()
            return str(self._credentials.token)

    def _refresh(self) -> None:
        import google.auth.exceptions
        import google.auth.transport.requests

        if self._request is None:
            self._request = google.auth.transport.requests.Request()
        try:
            self._credentials.refresh(self._request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise TokenUnavailableError(f"{self._description}: token refresh failed: {exc}") from exc


class StaticTokenSource:
    """A fixed token, for local use against a backend that takes one."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self, *, refresh: bool = False) -> str:
        return self._token


class NoTokenSource:
    """For backends that need no token (the local backend, an open KFP port-forward)."""

    def token(self, *, refresh: bool = False) -> str:
        return ""


def token_source_for(settings: Settings) -> TokenSource:
    """The TokenSource that RELAY_AUTH names; building it fetches nothing."""
    if settings.auth == "none":
        return NoTokenSource()
    if settings.auth == "static":
        return StaticTokenSource(settings.static_token)
    if settings.auth == "metadata":
        from google.auth import compute_engine

        return CredentialsTokenSource(
            compute_engine.Credentials(scopes=[CLOUD_PLATFORM]), "metadata server access token"
        )
    if settings.auth == "iap":
        return _iap_source(settings)
    from google.oauth2 import service_account

    if settings.kfp_audience and settings.backend == "kfp":
        credentials: Any = service_account.IDTokenCredentials.from_service_account_file(
            settings.credentials_file, target_audience=settings.kfp_audience
        )
        return CredentialsTokenSource(credentials, f"service-account ID token ({settings.credentials_file})")
    credentials = service_account.Credentials.from_service_account_file(
        settings.credentials_file, scopes=[CLOUD_PLATFORM]
    )
    return CredentialsTokenSource(credentials, f"service-account access token ({settings.credentials_file})")


def _iap_source(settings: Settings) -> TokenSource:
    import google.auth.exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    # On Google Cloud this is the metadata identity endpoint; with GOOGLE_APPLICATION_CREDENTIALS, that key.
    try:
        credentials = id_token.fetch_id_token_credentials(settings.kfp_audience, request=Request())
    except google.auth.exceptions.GoogleAuthError as exc:
        raise TokenUnavailableError(f"IAP ID token for {settings.kfp_audience}: no credentials: {exc}") from exc
    return CredentialsTokenSource(credentials, f"IAP ID token for {settings.kfp_audience}")


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
