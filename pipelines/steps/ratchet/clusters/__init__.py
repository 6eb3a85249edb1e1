"""Where algorithms are exported to: one small adapter per kind of cluster behind the `Cluster` protocol."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.ratchet.sandbox import OFFLINE_REQUIRED, SandboxRules
from relay.ports import BlobStore
from relay.urls import credentials_refusal, safe_for_credentials

CODE, DATA = "code", "data"
_DESTINATION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")


class ClusterError(Exception):
    """The destination refused or failed a request; the message carries what it said."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable  # "not now" (503, a connection refused) rather than "no"


class ClusterConfigError(ValueError):
    """The destination struct is wrong (a missing or unknown option, an insecure URL)."""


@dataclass(frozen=True)
class ExportedFile:
    """One file on its way to the destination.

    For code, `path` is relative to the algorithm's tree; for data, `collection`/`path` is where it goes and
    `name` is what the destination calls it (what `data://.my/...` became).
    """

    kind: Literal["code", "data"]
    path: str
    data: bytes
    collection: str = ""
    name: str = ""


@dataclass(frozen=True)
class CallResult:
    """One call: its output, or the destination's error; `seconds` is the latency the destination is judged by."""

    ok: bool
    output: Any = None
    error: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    retryable: bool = False  # the destination said "not yet" (a build in progress, 503): worth another try


class Cluster(Protocol):
    """What the ratchet needs of a destination: its names, a deploy, and calls with a timeout it enforces."""

    kind: str

    def data_name(self, collection: str, path: str) -> str: ...

    def algo_name(self, name: str, version: str | None) -> str: ...

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        """Install the algorithm's code and data files; ClusterError with the destination's message on failure."""
        ...

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        """Call the algorithm; a call still going at `timeout` seconds is stopped and reported `timed_out`."""
        ...

    def close(self) -> None:
        """Let go of what the calls held (the local cluster's warm workers, a connection pool); the run is over."""
        ...


@dataclass(frozen=True)
class ClusterContext:
    """What adapters may use besides their options: a private folder for this run, and the results store."""

    workdir: Path
    workflow: str
    blobs: BlobStore | None = None  # where the kfp destination copies data files (gs:// or a local folder)
    sandbox: SandboxRules = OFFLINE_REQUIRED  # how the local destination isolates the algorithms it runs
    # Where adapters may connect. The default refuses private addresses; local runs pass Egress.loopback().
    egress: Egress = STRICT


Factory = Callable[[Mapping[str, Any], ClusterContext], Cluster]

# kind -> module whose class' `from_options(options, context)` builds the adapter; imported only when used.
ADAPTERS = {
    "local": ("pipelines.steps.ratchet.clusters.local", "LocalCluster"),
    "http": ("pipelines.steps.ratchet.clusters.http", "HttpCluster"),
    "kfp": ("pipelines.steps.ratchet.clusters.kfp", "KfpCluster"),
}


def default_factories() -> dict[str, Factory]:
    def factory(module: str, name: str) -> Factory:
        def build(options: Mapping[str, Any], context: ClusterContext) -> Cluster:
            adapter = getattr(importlib.import_module(module), name)
            return adapter.from_options(options, context)  # type: ignore[no-any-return]

        return build

    return {kind: factory(module, name) for kind, (module, name) in ADAPTERS.items()}


def destination_kind(config: Mapping[str, Any]) -> str:
    """`kind`, `local` when left out: the embedded default needs nothing else."""
    kind = config.get("kind", "local")
    if not isinstance(kind, str) or kind not in ADAPTERS:
        raise ClusterConfigError(f"destination.kind: expected one of {', '.join(ADAPTERS)}, found {kind!r}")
    return kind


def destination_name(config: Mapping[str, Any]) -> str:
    """The destination's name in the baseline's path: `name` if given, else the kind and host (`kfp-host-8888`)."""
    name = config.get("name")
    if name is not None:
        if not isinstance(name, str) or not _DESTINATION_NAME.match(name):
            raise ClusterConfigError(f"destination.name: expected {_DESTINATION_NAME.pattern}, found {name!r}")
        return name
    kind = destination_kind(config)
    address = config.get("url") or config.get("host")
    if kind == "local" or not isinstance(address, str):
        return kind
    host = urlsplit(address).netloc or address
    return re.sub(r"[^a-z0-9.-]+", "-", f"{kind}-{host}".lower()).strip("-")[:63]


def options_of(config: Mapping[str, Any], known: Sequence[str], kind: str) -> dict[str, Any]:
    """The adapter's options, refusing keys it does not know (a typo must not silently change behaviour)."""
    unknown = sorted(set(config) - {"kind", "name", *known})
    if unknown:
        raise ClusterConfigError(
            f"destination ({kind}): expected only kind, name, {', '.join(known)}; found {', '.join(unknown)}"
        )
    return {k: v for k, v in config.items() if k not in ("kind", "name")}


def require_secure(url: str, has_credentials: bool, what: str) -> None:
    """Credentials go over https, or plain http to this machine only (as Relay's functions rule)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClusterConfigError(f"{what}: expected an http(s):// URL, found {url!r}")
    if has_credentials and not safe_for_credentials(url):
        raise ClusterConfigError(credentials_refusal(what, url))


def ca_bundle(value: object, context: ClusterContext, what: str) -> str | None:
    """A CA certificate option (PEM text, from a secret, or a path to a PEM file) as a path for `verify=`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ClusterConfigError(f"{what}: expected PEM text or a path to a PEM file, found {type(value).__name__}")
    if "-----BEGIN" in value:
        context.workdir.mkdir(parents=True, exist_ok=True)
        path = context.workdir / "ca-bundle.pem"
        path.write_text(value if value.endswith("\n") else value + "\n")
        path.chmod(0o600)
        return str(path)
    if not Path(value).is_file():
        raise ClusterConfigError(f"{what}: no PEM file at {value}")
    return value
