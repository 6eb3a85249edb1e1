"""Secret references (`secret://NAME` or a Secret Manager resource name), resolved only inside pipeline steps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from relay.errors import RelayError

PREFIX = "secret://"
_SHORT = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
_RESOURCE = re.compile(
    r"^projects/(?P<project>[^/]+)/secrets/(?P<secret>[A-Za-z0-9_-]+)(/versions/(?P<version>\w+))?\Z"
)
REDACTED = "[redacted]"


class SecretNotFoundError(RelayError):
    """A secret reference could not be resolved; the message names the reference, never a value."""


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def well_formed(reference: str) -> bool:
    name = reference.removeprefix(PREFIX)
    return bool(_SHORT.match(name) or _RESOURCE.match(name))


def reference_paths(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, reference) for every secret reference inside a JSON-like value, depth first."""
    if is_reference(value):
        yield path, str(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from reference_paths(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from reference_paths(inner, f"{path}[{i}]")


def references(value: object) -> Iterator[str]:
    """Every secret reference inside a parameter value, depth first."""
    return (reference for _, reference in reference_paths(value))


class SecretResolver(Protocol):
    def resolve(self, reference: str) -> str:
        """The secret's value; SecretNotFoundError naming `reference` when there is none."""
        ...


@dataclass(frozen=True)
class LocalSecrets:
    """`secret://NAME` from `RELAY_SECRET_<NAME>` (upper case, - as _) or the file NAME in a secrets folder."""

    env: Mapping[str, str]
    folder: Path | None = None

    def resolve(self, reference: str) -> str:
        name = _short_name(reference)
        variable = "RELAY_SECRET_" + name.upper().replace("-", "_")
        if variable in self.env:
            return self.env[variable]
        if self.folder is not None and (self.folder / name).is_file():
            return (self.folder / name).read_text().rstrip("\n")
        where = f"{variable} or {self.folder / name}" if self.folder else variable
        raise SecretNotFoundError(f"{reference}: no such secret (looked in {where})")


class SecretManagerSecrets:
    """Secret Manager, `secret://NAME` in `project` at its latest version, or a full resource name as given."""

    def __init__(self, project: str, client: Any = None) -> None:
        self._project = project
        self._client = client

    def resolve(self, reference: str) -> str:
        from google.api_core import exceptions
        from google.cloud import secretmanager

        if self._client is None:
            self._client = secretmanager.SecretManagerServiceClient()
        try:
            response = self._client.access_secret_version(name=_resource_name(reference, self._project))
        except exceptions.GoogleAPIError as exc:
            raise SecretNotFoundError(f"{reference}: Secret Manager answered {type(exc).__name__}") from None
        return str(response.payload.data.decode("utf-8"))


def resolver_from_env(env: Mapping[str, str]) -> SecretResolver:
    """Secret Manager when RELAY_SECRETS=secret-manager (on Google Cloud), else env variables and a folder."""
    if env.get("RELAY_SECRETS", "local") == "secret-manager":
        return SecretManagerSecrets(env.get("RELAY_SECRETS_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT", ""))
    folder = env.get("RELAY_SECRETS_DIR")
    return LocalSecrets(env=dict(env), folder=Path(folder) if folder else None)


def resolve_all(value: Any, resolver: SecretResolver) -> tuple[Any, tuple[str, ...]]:
    """`value` with every reference replaced by its secret, and the secrets themselves (for redaction)."""
    found: dict[str, str] = {}

    def walk(item: Any) -> Any:
        if is_reference(item):
            if item not in found:
                found[item] = resolver.resolve(item)
            return found[item]
        if isinstance(item, Mapping):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        return item

    return walk(value), tuple(found.values())


class Redactor:
    """Scrubs secret values out of any text before it is logged, recorded or raised."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = set(self._secrets)
        for secret in secrets:
            if secret:
                found.add(secret)
                found.update(_url_parts(secret))
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def _url_parts(secret: str) -> set[str]:
    """A URL kept as a secret (a webhook with a token in its path) may appear in part: its path segments and query
    values of 8 characters or more are secret too."""
    parts = urlsplit(secret)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return set()
    pieces = [unquote(segment) for segment in parts.path.split("/")] + [value for _, value in parse_qsl(parts.query)]
    return {piece for piece in pieces if len(piece) >= 8}


def _short_name(reference: str) -> str:
    name = reference.removeprefix(PREFIX)
    resource = _RESOURCE.match(name)
    if resource:
        return resource.group("secret")
    if not _SHORT.match(name):
        raise SecretNotFoundError(f"{reference}: expected secret://NAME or secret://projects/P/secrets/S[/versions/V]")
    return name


def _resource_name(reference: str, project: str) -> str:
    name = reference.removeprefix(PREFIX)
    resource = _RESOURCE.match(name)
    if resource:
        return name if resource.group("version") else f"{name}/versions/latest"
    if not project:
        raise SecretNotFoundError(f"{reference}: a short reference needs RELAY_SECRETS_PROJECT or GOOGLE_CLOUD_PROJECT")
    return f"projects/{project}/secrets/{_short_name(reference)}/versions/latest"
