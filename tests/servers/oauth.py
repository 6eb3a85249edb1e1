"""Google's OAuth2 token endpoint for service-account JWT-bearer grants, with throwaway key files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import rsa

from tests.servers.base import LoopbackServer, Request, Response
from tests.servers.tokens import (
    Clock,
    Jwt,
    TokenAuthority,
    TokenIssuer,
    key_id,
    new_rsa_key,
    numeric_id,
    private_pem,
)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth puts Google's own endpoint in `aud` whatever the key file's token_uri says
# (service_account._GOOGLE_OAUTH2_TOKEN_ENDPOINT); Google also accepts its older token URLs.
GOOGLE_TOKEN_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
)
DEFAULT_CLIENT_EMAIL = "relay-fn@relay-test.iam.gserviceaccount.com"
_MAX_ASSERTION_LIFETIME = 3600
_CLOCK_SKEW = 300
_BAD_TIMES = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)


@dataclass(frozen=True)
class ServiceAccountKey:
    """A generated key: `info` is exactly what a downloaded key file contains."""

    info: Mapping[str, str]
    public_key: rsa.RSAPublicKey

    @property
    def client_email(self) -> str:
        return self.info["client_email"]

    @property
    def private_key_id(self) -> str:
        return self.info["private_key_id"]

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(dict(self.info), indent=2))
        return path


def make_service_account_key(
    token_uri: str, *, client_email: str = DEFAULT_CLIENT_EMAIL, project_id: str = "relay-test"
) -> ServiceAccountKey:
    private = new_rsa_key()
    client_id = numeric_id(client_email)
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id(private.public_key()),
        "private_key": private_pem(private),
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email}",
        "universe_domain": "googleapis.com",
    }
    return ServiceAccountKey(info, private.public_key())


class OAuthTokenServer(TokenAuthority, LoopbackServer):
    """POST /token: exchanges a signed service-account assertion for an access token or an ID token."""

    def __init__(self, *, token_lifetime: int = 3600, id_token_lifetime: int = 3600, clock: Clock = time.time):
        super().__init__()
        self.token_lifetime = token_lifetime
        self.id_token_lifetime = id_token_lifetime
        self._issuer = TokenIssuer("sa-access", clock)
        self._keys_lock = threading.Lock()
        self._keys: dict[str, dict[str, rsa.RSAPublicKey]] = {}  # client_email -> {key id: public key}

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def create_key(
        self, *, client_email: str = DEFAULT_CLIENT_EMAIL, project_id: str = "relay-test"
    ) -> ServiceAccountKey:
        """A fresh key whose token_uri is this server, already trusted by it."""
        key = make_service_account_key(self.token_uri, client_email=client_email, project_id=project_id)
        self.trust(key)
        return key

    def write_key_file(self, path: Path, *, client_email: str = DEFAULT_CLIENT_EMAIL) -> Path:
        return self.create_key(client_email=client_email).write(path)

    def trust(self, key: ServiceAccountKey) -> None:
        with self._keys_lock:
            self._keys.setdefault(key.client_email, {})[key.private_key_id] = key.public_key

    def delete_key(self, key: ServiceAccountKey) -> None:
        """Like deleting the key in IAM: its assertions now fail with invalid_grant."""
        with self._keys_lock:
            self._keys.get(key.client_email, {}).pop(key.private_key_id, None)

    def fault_response(self, status: int) -> Response:
        return _oauth_error(status, "internal_failure" if status >= 500 else "invalid_request", "injected")

    def handle(self, request: Request) -> Response:
        if request.path != "/token":
            return Response.text(404, f"Not Found: {request.path}")
        if request.method != "POST":
            return Response.text(405, f"Method {request.method} not allowed")
        form = _form(request)
        if form is None:
            return _oauth_error(400, "invalid_request", "Expected a form-urlencoded or JSON body.")
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        assertion = form.get("assertion")
        if not assertion:
            return _oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        try:
            jwt = Jwt.parse(assertion)
        except ValueError as exc:
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        problem = self._check_assertion(jwt)
        if problem is not None:
            return problem
        claims = jwt.payload
        target_audience = claims.get("target_audience")
        if target_audience:
            token = self._issuer.id_token(
                audience=str(target_audience),
                email=str(claims["iss"]),
                subject=numeric_id(str(claims["iss"])),
                lifetime=self.id_token_lifetime,
            )
            return Response.json(200, {"id_token": token})
        if not claims.get("scope"):
            return _oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = self._issuer.access_token(self.token_lifetime)
        return Response.json(200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    def _check_assertion(self, jwt: Jwt) -> Response | None:
        claims = jwt.payload
        with self._keys_lock:
            keys = dict(self._keys.get(str(claims.get("iss")), {}))
        if not keys:
            return _oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        kid = jwt.header.get("kid")
        candidates = [keys[kid]] if kid in keys else [] if kid else list(keys.values())
        if not any(jwt.verifies_with(k) for k in candidates):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") not in (self.token_uri, *GOOGLE_TOKEN_AUDIENCES):
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: Failed audience check ({claims.get('aud')}).")
        iat, exp, now = claims.get("iat"), claims.get("exp"), self._issuer.now()
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            return _oauth_error(400, "invalid_grant", _BAD_TIMES)
        if iat > now + _CLOCK_SKEW or exp <= now or exp - iat > _MAX_ASSERTION_LIFETIME:
            return _oauth_error(400, "invalid_grant", _BAD_TIMES)
        return None


def _form(request: Request) -> dict[str, Any] | None:
    content_type = (request.header("Content-Type") or "").split(";")[0].strip()
    if content_type == "application/x-www-form-urlencoded":
        return {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
    if content_type == "application/json" and isinstance(request.json, dict):
        return dict(request.json)
    return None


def _oauth_error(status: int, error: str, description: str) -> Response:
    return Response.json(status, {"error": error, "error_description": description})
