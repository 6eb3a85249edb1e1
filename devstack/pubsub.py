"""The Pub/Sub emulator from the Google Cloud CLI, and helpers to create topics, push subscriptions and messages."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.processes import LOOPBACK, ManagedProcess, ProcessService, ProcessSpec, free_port, tcp_probe
from relay.naming import subscription_path, topic_path

__all__ = [
    "PubSubEmulator",
    "create_push_subscription",
    "create_topic",
    "emulator_available",
    "find_emulator_script",
    "publish",
    "publisher_client",
    "subscriber_client",
    "subscription_path",
    "topic_path",
]

_EMULATOR_SCRIPT = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
# Every admin call gets a bounded retry: the client default retries UNAVAILABLE for up to 600 s, which turns
# a dead or misaddressed emulator into a hang instead of an error.
_RPC_TIMEOUT = 10.0


# -- locating the emulator ---------------------------------------------------------------------------------


@functools.cache
def find_emulator_script() -> Path | None:
    """The SDK's `cloud-pubsub-emulator` launcher, or None if the CLI or the emulator component is missing.

    The launcher is what `gcloud beta emulators pubsub start` runs, minus a second of gcloud start-up and
    a parent process that would orphan the JVM when killed.
    """
    for root in _sdk_roots():
        script = root / _EMULATOR_SCRIPT
        if script.is_file() and os.access(script, os.X_OK):
            return script
    return None


def _sdk_roots() -> list[Path]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return []
    # Usually <sdk>/bin/gcloud behind a symlink (apt, Homebrew, the tarball): resolving it is instant.
    resolved = Path(gcloud).resolve().parent.parent
    if (resolved / _EMULATOR_SCRIPT).is_file():
        return [resolved]
    asked = _ask_gcloud_for_sdk_root(gcloud)
    return [resolved] if asked is None else [resolved, asked]


def _ask_gcloud_for_sdk_root(gcloud: str) -> Path | None:
    # A throwaway CLOUDSDK_CONFIG: gcloud writes state there, and the user's config must not matter.
    with tempfile.TemporaryDirectory(prefix="devstack-gcloud-") as config:
        env = {**os.environ, "CLOUDSDK_CONFIG": config, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return Path(out) if out else None


def _java_available() -> bool:
    # The launcher uses $JAVA_HOME/bin/java when JAVA_HOME is set, otherwise java from PATH.
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        return os.access(Path(java_home) / "bin" / "java", os.X_OK)
    return shutil.which("java") is not None


def emulator_available() -> str | None:
    """None when the emulator can start here; otherwise why not, so that callers can skip or fall back."""
    if not _java_available():
        return "no Java runtime: the Pub/Sub emulator needs `java` on PATH or JAVA_HOME"
    if shutil.which("gcloud") is None:
        return "no Google Cloud CLI: `gcloud` is not on PATH"
    if find_emulator_script() is None:
        return (
            "the Google Cloud CLI has no Pub/Sub emulator component "
            "(`gcloud components install pubsub-emulator` or the google-cloud-cli-pubsub-emulator package)"
        )
    return None


# -- the emulator process ----------------------------------------------------------------------------------


class PubSubEmulator(ProcessService):
    """The Pub/Sub emulator on loopback, in memory; `with` starts it and stops it with its JVM."""

    def __init__(
        self,
        workdir: Path,
        *,
        project: str = "relay-local",
        host: str = LOOPBACK,
        port: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.project = project
        self.host = host
        self.port = port if port is not None else free_port(host)
        script = find_emulator_script()
        if script is None:
            raise RuntimeError(emulator_available() or "Pub/Sub emulator not found")
        spec = ProcessSpec(
            name="pubsub-emulator",
            argv=[str(script), f"--host={host}", f"--port={self.port}"],
        )
        # Netty binds only once the server is started, so an accepted TCP connection means it is ready.
        self.process = ManagedProcess(
            spec, log_dir=workdir, ready=tcp_probe(host, self.port), start_timeout=start_timeout
        )

    @property
    def host_port(self) -> str:
        """`host:port`, the value for PUBSUB_EMULATOR_HOST."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host_port, "PUBSUB_PROJECT_ID": self.project}


# -- clients -----------------------------------------------------------------------------------------------


def _channel(host_port: str) -> Any:
    import grpc  # type: ignore[import-untyped]

    # grpc honours http_proxy/https_proxy from the environment; loopback traffic must never go there.
    return grpc.insecure_channel(host_port, options=[("grpc.enable_http_proxy", 0)])


def publisher_client(host_port: str) -> Any:
    """A PublisherClient for the emulator at host_port, whatever PUBSUB_EMULATOR_HOST says in this process.

    `client_options={"api_endpoint": ...}` with AnonymousCredentials is not enough: python-pubsub only swaps
    in an insecure channel when PUBSUB_EMULATOR_HOST is set, so without it the client speaks TLS to the
    emulator and retries the failed handshake for up to 600 s. A transport on an insecure channel always works.
    """
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=_channel(host_port)))


def subscriber_client(host_port: str) -> Any:
    """A SubscriberClient for the emulator at host_port (see `publisher_client` for why a transport)."""
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=_channel(host_port)))


def _retry() -> Any:
    from google.api_core.retry import Retry

    return Retry(timeout=_RPC_TIMEOUT)


def create_topic(host_port: str, project: str, topic: str, *, exist_ok: bool = True) -> str:
    """Create `topic` (a name as relay.naming.is_pubsub_name takes) and return its full path."""
    from google.api_core.exceptions import AlreadyExists

    path = topic_path(project, topic)
    with publisher_client(host_port) as client:
        try:
            client.create_topic(name=path, retry=_retry(), timeout=_RPC_TIMEOUT)
        except AlreadyExists:
            if not exist_ok:
                raise
    return path


def create_push_subscription(
    host_port: str,
    project: str,
    subscription: str,
    *,
    topic: str,
    endpoint: str,
    ack_deadline_seconds: int = 10,
    exist_ok: bool = True,
) -> str:
    """Create a push subscription on `topic` that POSTs the legacy push JSON to `endpoint`; return its path.

    The emulator redelivers a non-2xx answer about once a second, and a delivery that takes longer than
    `ack_deadline_seconds`.
    """
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    path = subscription_path(project, subscription)
    with subscriber_client(host_port) as client:
        try:
            client.create_subscription(
                request={
                    "name": path,
                    "topic": topic_path(project, topic),
                    "push_config": pubsub_v1.types.PushConfig(push_endpoint=endpoint),
                    "ack_deadline_seconds": ack_deadline_seconds,
                },
                retry=_retry(),
                timeout=_RPC_TIMEOUT,
            )
        except AlreadyExists:
            if not exist_ok:
                raise
    return path


def publish(
    host_port: str,
    project: str,
    topic: str,
    data: bytes,
    attributes: Mapping[str, str] | None = None,
    *,
    timeout: float = _RPC_TIMEOUT,
) -> str:
    """Publish one message and return its message id.

    A functions-framework CloudEvent function converts a push into a messagePublished event only when the
    message has attributes: pass at least one to reach such a function.
    """
    with publisher_client(host_port) as client:
        future = client.publish(topic_path(project, topic), data, **dict(attributes or {}))
        message_id: str = future.result(timeout=timeout)
    return message_id
