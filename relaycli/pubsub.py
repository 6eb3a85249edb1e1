"""Publishing a trigger message: the Pub/Sub emulator when PUBSUB_EMULATOR_HOST names one, else the real service."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from relay import naming
from relaycli.errors import CliError, UsageError
from relaycli.output import one_line

# Bounds every publish: the client's default retries UNAVAILABLE for up to 600 s, a hang rather than an error.
PUBLISH_TIMEOUT = 30.0
_TOPIC_PATH = re.compile(r"^projects/([^/]+)/topics/([^/]+)\Z")


def topic_path(topic: str, project: str | None, env: Mapping[str, str]) -> str:
    """`projects/P/topics/T` from a full path, or from a short name and the project (flag, environment, ADC)."""
    full = _TOPIC_PATH.match(topic)
    if full:
        if project and project != full.group(1):
            raise UsageError(f"--project: expected {full.group(1)} (the project in --topic {topic}), found {project}")
        name = full.group(2)
    else:
        name = topic
    if not naming.PUBSUB_NAME.match(name):
        raise UsageError(
            f"--topic: expected a topic name (a letter, then 2-254 of A-Z a-z 0-9 - _ . ~ + %) or "
            f"projects/P/topics/T, found {topic!r}"
        )
    if full:
        return topic
    chosen = project or _project_from(env)
    if not chosen:
        raise UsageError(
            f"--project: expected the project of topic {topic} (--project, PUBSUB_PROJECT_ID with the emulator, "
            "GOOGLE_CLOUD_PROJECT, or --topic projects/P/topics/T), found none"
        )
    return naming.topic_path(chosen, topic)


def _project_from(env: Mapping[str, str]) -> str:
    emulator = bool(env.get("PUBSUB_EMULATOR_HOST"))
    names = ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
    for name in names if emulator else names[1:]:
        if env.get(name, "").strip():
            return env[name].strip()
    if emulator:
        return ""
    # As the client libraries do: the project of Application Default Credentials (gcloud's, a key file's).
    import google.auth
    from google.auth.exceptions import GoogleAuthError

    try:
        _, project = google.auth.default()
    except GoogleAuthError:
        return ""
    return str(project or "")


def publish(topic: str, data: bytes, attributes: Mapping[str, str], env: Mapping[str, str]) -> str:
    """Publish one message on `topic` (a full path) and return its message id."""
    from google.api_core import exceptions
    from google.api_core.retry import Retry
    from google.auth.exceptions import GoogleAuthError

    try:
        client = _publisher(env.get("PUBSUB_EMULATOR_HOST", "").strip())
    except GoogleAuthError as exc:
        raise UsageError(
            "Pub/Sub credentials: expected Application Default Credentials "
            f"(gcloud auth application-default login) or PUBSUB_EMULATOR_HOST, found none: {one_line(exc)}"
        ) from None
    try:
        with client:
            future = client.publish(
                topic, data, retry=Retry(timeout=PUBLISH_TIMEOUT), timeout=PUBLISH_TIMEOUT, **attributes
            )
            return str(future.result(timeout=PUBLISH_TIMEOUT))
    except exceptions.NotFound:
        raise CliError(f"{topic}: expected an existing topic, found none") from None
    except exceptions.PermissionDenied as exc:
        raise CliError(f"{topic}: expected permission to publish, found {one_line(exc.message)}") from None
    except (exceptions.GoogleAPIError, GoogleAuthError, TimeoutError) as exc:
        raise CliError(f"{topic}: publish failed: {one_line(exc) or type(exc).__name__}") from None


def _publisher(emulator: str) -> Any:
    if emulator:
        # devstack's client keeps loopback traffic off any http_proxy and speaks plain gRPC to the emulator.
        from devstack.pubsub import publisher_client

        return publisher_client(emulator)
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()
