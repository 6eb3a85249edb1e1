"""Where the push step sends objects: one small adapter per platform behind the `Destination` protocol."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from pipelines.steps.checksums import Checksums, HashingReader
from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from relay.naming import split_owned
from relay.urls import credentials_refusal, safe_for_credentials


class Presence(Enum):
    ABSENT = "absent"
    SAME = "same"  # there already, with the same checksum: a re-run skips it
    DIFFERENT = "different"  # there with other content: replaced only when `overwrite` is true


@dataclass(frozen=True)
class Receipt:
    """What became of one object."""

    source: str
    destination: str
    bytes: int
    checksum: str
    version: str | None = None
    skipped: bool = False
    pending: bool = False  # spooled for a batch platform, delivered only once `close` publishes it

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes,
            "checksum": self.checksum,
            "version": self.version,
            "skipped": self.skipped,
            "pending": self.pending,
        }


class Destination(Protocol):
    """Objects arrive one at a time, streamed; batch platforms (a dataset version, a commit) publish on `close`."""

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        """Whether `item` (whose bytes have these checksums) is already at the destination."""
        ...

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        """Copy the stream; raise StepError on failure. Receipts of batch platforms are final after `close`."""
        ...

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        """Publish what was sent (one commit or version, described by `message`); final receipts, if changed.

        `failed` counts the objects of this push that never reached `send` or failed in it, wherever they failed.
        """
        ...


Factory = Callable[[Mapping[str, Any]], Destination]

# kind -> module whose `from_options(options, *, egress)` class method builds the adapter; imported only when used.
ADAPTERS = {
    "gcs": ("pipelines.steps.destinations.gcs", "GcsDestination"),
    "s3": ("pipelines.steps.destinations.s3", "S3Destination"),
    "http": ("pipelines.steps.destinations.http", "HttpDestination"),
    "kaggle": ("pipelines.steps.destinations.kaggle", "KaggleDestination"),
    "huggingface": ("pipelines.steps.destinations.huggingface", "HuggingFaceDestination"),
}


def default_factories(*, egress: Egress = STRICT) -> dict[str, Factory]:
    """Every adapter, connecting only where `egress` allows: public addresses unless the policy names more."""

    def factory(module: str, name: str) -> Factory:
        def build(options: Mapping[str, Any]) -> Destination:
            adapter = getattr(importlib.import_module(module), name)
            return adapter.from_options(options, egress=egress)  # type: ignore[no-any-return]

        return build

    return {kind: factory(module, name) for kind, (module, name) in ADAPTERS.items()}


def destination_for(config: Mapping[str, Any], factories: Mapping[str, Factory]) -> Destination:
    """The adapter `config["kind"]` names, built from the rest of `config` (its secrets already resolved)."""
    kind = config.get("kind")
    if kind not in factories:
        raise StepError(400, f"destination.kind: expected one of {', '.join(sorted(factories))}, found {kind!r}")
    options = {key: value for key, value in config.items() if key != "kind"}
    try:
        return factories[str(kind)](options)
    except (KeyError, TypeError, ValueError) as exc:
        raise StepError(400, f"destination ({kind}): {exc}") from exc


def required(options: Mapping[str, Any], name: str, kind: str) -> str:
    value = options.get(name)
    if not isinstance(value, str) or not value:
        raise StepError(400, f"destination.{name}: expected a non-empty string for {kind}, found {value!r}")
    return value


def optional(options: Mapping[str, Any], name: str, kind: str) -> str | None:
    return None if options.get(name) is None else required(options, name, kind)


def known_options(options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """A typo in an option name (`secret_acess_key`) is a 400, not a silently ignored setting."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise StepError(
            400, f"destination: expected options among {', '.join(sorted(allowed))}; found {', '.join(unknown)}"
        )


def owned_name(value: str, option: str, form: str, kind: str) -> tuple[str, str]:
    """(owner, name) of a Hub repository's or a Kaggle dataset's `owner/name`, as the policy reads its owner."""
    parts = split_owned(value)
    if parts is None:
        raise StepError(400, f"destination.{option}: expected {form} for {kind}, found {value!r}")
    return parts


def credentials_endpoint(endpoint: str, kind: str) -> str:
    """An API endpoint that every request sends credentials to: https, or plain http to this machine only."""
    if not endpoint.startswith(("https://", "http://")):
        raise StepError(400, f"destination.endpoint: expected an http(s) URL for {kind}, found {endpoint!r}")
    if not safe_for_credentials(endpoint):
        raise StepError(400, credentials_refusal("destination.endpoint", repr(endpoint)))
    return endpoint.rstrip("/")


def check_read(item: SourceObject, stream: HashingReader, kept: str = "") -> None:
    """A source that changed while read (not the size or checksums it states) goes no further: a 502 saying what
    was read, what the source states, and (`kept`) what was therefore not done."""
    if stream.bytes != item.size or stream.checksums.matches(item.checksums) is False:
        raise StepError(
            502,
            f"{item.uri}: read {stream.bytes} bytes with {stream.checksums.describe()}, the source states "
            f"{item.size} bytes with {item.checksums.describe()}: changed or corrupted in transit"
            + (f"; {kept}" if kept else ""),
        )
