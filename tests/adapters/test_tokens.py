"""Token sources against loopback token servers: cached, refreshed early, forced after a 401."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.adapters.http import HttpClient
from relay.adapters.tokens import MetadataTokenSource, StaticTokenSource, call_with_token, token_source_for
from relay.config import Settings
from relay.errors import TokenUnavailableError, UnauthorizedError
from relay.ports import TokenSource
from tests.servers.metadata import MetadataServer
from tests.servers.oauth import OAuthTokenServer

ACCOUNT = "/computeMetadata/v1/instance/service-accounts/default/"


def test_service_account_tokens_are_cached_until_refresh_is_forced(tokens: TokenSource, oauth: OAuthTokenServer):
    first = tokens.token()
    assert tokens.token() == first and oauth.token_fetches == 1 and oauth.is_valid(first)
    fresh = tokens.token(refresh=True)
    assert fresh != first and oauth.token_fetches == 2


def test_a_service_account_with_an_audience_gets_id_tokens(key_file: Path, oauth: OAuthTokenServer):
    settings = Settings(
        results_uri="r",
        backend="kfp",
        kfp_host="h",
        auth="service-account",
        credentials_file=str(key_file),
        kfp_audience="iap-client.apps.googleusercontent.com",
    )
    source = token_source_for(settings, HttpClient())
    token = source.token()
    assert source.token() == token and oauth.id_token_fetches == 1
    assert oauth.is_valid(token, audience="iap-client.apps.googleusercontent.com")


def test_a_refused_refresh_is_a_transient_token_error(tokens: TokenSource, oauth: OAuthTokenServer):
    oauth.fail_next(1, 400, body={"error": "invalid_grant", "error_description": "Account not found"})
    with pytest.raises(TokenUnavailableError, match="token refresh failed"):
        tokens.token()


def test_call_with_token_retries_once_with_a_fresh_token():
    seen: list[str] = []

    class Rotating:
        def token(self, *, refresh: bool = False) -> str:
            return "new" if refresh else "old"

    def call(token: str) -> str:
        seen.append(token)
        if token == "old":
            raise UnauthorizedError("401")
        return "ok"

    assert call_with_token(Rotating(), call) == "ok" and seen == ["old", "new"]
    with pytest.raises(TokenUnavailableError, match="freshly fetched token too"):
        call_with_token(StaticTokenSource("old"), call)


def sources(metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> list[str]:
    """Three tokens from the TokenSource `env` configures: cached, cached, forced."""
    monkeypatch.setenv("GCE_METADATA_HOST", metadata.host_port)
    source = token_source_for(Settings.from_env({"RELAY_RESULTS_URI": "r", **env}), HttpClient())
    return [source.token(), source.token(), source.token(refresh=True)]


def test_metadata_access_tokens_are_fetched_once_and_refreshed_on_demand(monkeypatch: pytest.MonkeyPatch):
    with MetadataServer() as metadata:
        first, again, forced = sources(
            metadata,
            monkeypatch,
            {
                "RELAY_BACKEND": "vertex",
                "RELAY_VERTEX_PROJECT": "p",
                "RELAY_VERTEX_LOCATION": "l",
                "RELAY_VERTEX_PIPELINE_ROOT": "gs://b",
            },
        )
        assert first == again != forced and metadata.token_fetches == 2
        assert metadata.is_valid(forced)
        # One GET per token, straight to the token endpoint (google-auth first asks who the account is).
        assert [r.path for r in metadata.requests] == [f"{ACCOUNT}token"] * 2


def test_tokens_near_expiry_are_refreshed_before_use(monkeypatch: pytest.MonkeyPatch):
    # Like google-auth, a token is treated as expired ~3m45s early: a 2-minute token is never handed out twice.
    with MetadataServer(token_lifetime=120) as metadata:
        sources(metadata, monkeypatch, {"RELAY_BACKEND": "kfp", "RELAY_KFP_HOST": "https://kfp.example"})
        assert metadata.token_fetches == 3


def test_iap_id_tokens_come_from_the_metadata_identity_endpoint(monkeypatch: pytest.MonkeyPatch):
    with MetadataServer() as metadata:
        first, again, forced = sources(
            metadata,
            monkeypatch,
            {"RELAY_BACKEND": "kfp", "RELAY_KFP_HOST": "https://kfp.example", "RELAY_KFP_AUDIENCE": "iap-client"},
        )
        assert first == again != forced and metadata.id_token_fetches == 2
        assert metadata.is_valid(first, audience="iap-client")


def test_an_unreachable_metadata_server_is_a_transient_token_error(monkeypatch: pytest.MonkeyPatch):
    with MetadataServer() as metadata:
        host = metadata.host_port
    source = MetadataTokenSource(HttpClient(), host)  # the server is gone: the connection is refused
    with pytest.raises(TokenUnavailableError, match="no answer"):
        source.token()
