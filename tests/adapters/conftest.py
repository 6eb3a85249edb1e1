"""Loopback servers that speak the real wire protocols, and token sources on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.adapters.http import HttpClient
from relay.adapters.tokens import token_source_for
from relay.config import Settings
from relay.ports import TokenSource
from tests.servers.kfp import KfpApiServer
from tests.servers.oauth import OAuthTokenServer
from tests.servers.vertex import VertexServer


@pytest.fixture
def oauth() -> Iterator[OAuthTokenServer]:
    with OAuthTokenServer() as server:
        yield server


@pytest.fixture
def key_file(oauth: OAuthTokenServer, tmp_path: Path) -> Path:
    return oauth.write_key_file(tmp_path / "key.json")


@pytest.fixture
def tokens(key_file: Path) -> TokenSource:
    """Access tokens from a service-account key whose token_uri is the loopback OAuth server."""
    settings = Settings(results_uri="r", backend="vertex", auth="service-account", credentials_file=str(key_file))
    return token_source_for(settings, HttpClient())


@pytest.fixture
def kfp_server(oauth: OAuthTokenServer) -> Iterator[KfpApiServer]:
    with KfpApiServer(token_check=oauth.is_valid) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def vertex_server(oauth: OAuthTokenServer) -> Iterator[VertexServer]:
    with VertexServer(token_check=oauth.is_valid) as server:
        yield server
    assert server.errors == []
