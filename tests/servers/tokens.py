"""Tokens the fake identity servers issue: RS256 JWTs and a ledger of which tokens are still valid."""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

Clock = Callable[[], float]


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def server_signing_key() -> rsa.RSAPrivateKey:
    """One key per test process: generating 2048-bit keys costs ~50 ms each."""
    return new_rsa_key()


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: rsa.RSAPublicKey) -> str:
    return hashlib.sha1(public_pem(key).encode()).hexdigest()


def numeric_id(email: str) -> str:
    """A stable 21-digit id, the shape of a real service account's unique id (the `sub` claim)."""
    return "1" + str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(payload: Mapping[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "kid": kid, "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@dataclass(frozen=True)
class Jwt:
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes

    @classmethod
    def parse(cls, token: str) -> Jwt:
        """Split and decode without verifying; ValueError when it is not a JWT at all."""
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError(f"expected a JWT of 3 dot-separated segments, found {len(parts)}")
        try:
            header, payload = (json.loads(b64url_decode(p)) for p in parts[:2])
            signature = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"JWT segments are not base64url JSON: {exc}") from exc
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise ValueError("JWT header and payload must be JSON objects")
        return cls(header, payload, f"{parts[0]}.{parts[1]}".encode(), signature)

    def verifies_with(self, key: rsa.RSAPublicKey) -> bool:
        if self.header.get("alg") != "RS256":
            return False
        try:
            key.verify(self.signature, self.signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class IssuedToken:
    value: str
    kind: str  # "access" or "id"
    expires_at: float
    audience: str | None = None


class TokenIssuer:
    """Issues distinct access and ID tokens and remembers which are unexpired and unrevoked."""

    def __init__(self, access_prefix: str, clock: Clock = time.time) -> None:
        self._access_prefix = access_prefix
        self._clock = clock
        self._key = server_signing_key()
        self.kid = key_id(self._key.public_key())
        self._lock = threading.Lock()
        self._live: dict[str, IssuedToken] = {}
        self._access_count = 0
        self._id_count = 0
        # jti makes every ID token unique: RS256 signatures are deterministic, so two fetches in the
        # same second with the same claims would otherwise be byte-identical.
        self._jti = itertools.count(1)

    def now(self) -> float:
        return self._clock()

    def access_token(self, lifetime: int) -> str:
        with self._lock:
            self._access_count += 1
            value = f"{self._access_prefix}-{self._access_count}"
            self._live[value] = IssuedToken(value, "access", self._clock() + lifetime)
            return value

    def id_token(
        self,
        *,
        audience: str,
        email: str,
        subject: str,
        lifetime: int,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        now = int(self._clock())
        payload = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": True,
            "exp": now + lifetime,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": subject,
            "jti": f"{self.kid[:8]}-{next(self._jti)}",
            **(extra or {}),
        }
        value = encode_jwt(payload, self._key, self.kid)
        with self._lock:
            self._id_count += 1
            self._live[value] = IssuedToken(value, "id", float(now + lifetime), audience)
        return value

    @property
    def access_count(self) -> int:
        with self._lock:
            return self._access_count

    @property
    def id_count(self) -> int:
        with self._lock:
            return self._id_count

    def is_valid(self, token: str, audience: str | None = None) -> bool:
        """Issued here, unexpired, unrevoked; with `audience`, only an ID token for that audience."""
        with self._lock:
            issued = self._live.get(token)
        if issued is None or self._clock() >= issued.expires_at:
            return False
        return audience is None or (issued.kind == "id" and issued.audience == audience)

    def valid_tokens(self) -> list[str]:
        with self._lock:
            live = list(self._live.values())
        now = self._clock()
        return [t.value for t in live if now < t.expires_at]

    def revoke_all(self) -> None:
        with self._lock:
            self._live.clear()

    @property
    def public_certs(self) -> dict[str, str]:
        """{kid: PEM}, the shape `google.auth.jwt.decode(token, certs=...)` accepts."""
        return {self.kid: public_pem(self._key.public_key())}


class TokenAuthority:
    """What a token-issuing server exposes to tests and to other servers' `token_check`."""

    _issuer: TokenIssuer

    @property
    def token_fetches(self) -> int:
        return self._issuer.access_count

    @property
    def id_token_fetches(self) -> int:
        return self._issuer.id_count

    def is_valid(self, token: str, audience: str | None = None) -> bool:
        return self._issuer.is_valid(token, audience)

    def valid_tokens(self) -> list[str]:
        return self._issuer.valid_tokens()

    def revoke_all(self) -> None:
        """Simulate server-side expiry: every token issued so far stops being accepted."""
        self._issuer.revoke_all()

    @property
    def public_certs(self) -> dict[str, str]:
        return self._issuer.public_certs
