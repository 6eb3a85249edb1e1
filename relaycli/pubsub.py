"""Publishing a trigger message: the Pub/Sub emulator when PUBSUB_EMULATOR_HOST names one, else the real service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay import naming
from relaycli.errors import CliError, UsageError
from relaycli.output import one_line

# Bounds every publish: the client's default retries UNAVAILABLE for up to 600 s, a hang rather than an error.
PUBLISH_TIMEOUT = 30.0


def topic_path(topic: str, project: str | None, env: Mapping[str, str]) -> str:
    """`projects/P/topics/T` from a full path, or from a short name and the project (flag, environment, ADC)."""
    return _path("topics", "--topic", topic, project, env)


def subscription_path(name: str, project: str | None, env: Mapping[str, str]) -> str:
    """`projects/P/subscriptions/S` from a full path or a short name, the project found as for topics."""
    return _path("subscriptions", "--subscription", name, project, env)


def _path(kind: str, flag: str, given: str, project: str | None, env: Mapping[str, str]) -> str:
    """A topic's or a subscription's path, checked by the one rule Relay holds for them (relay.naming)."""
    what = kind.removesuffix("s")
    if given.startswith("projects/"):
        parts = naming.split_pubsub_path(given)
        if parts is None or parts[1] != kind:
            raise UsageError(
                f"{flag}: expected projects/PROJECT/{kind}/{what.upper()} ({naming.PROJECT_ID_RULE}; "
                f"a {what} name: {naming.PUBSUB_NAME_RULE}), found {given!r}"
            )
        if project and project != parts[0]:
            raise UsageError(f"--project: expected {parts[0]} (the project in {flag} {given}), found {project}")
        return given
    if not naming.is_pubsub_name(given):
        raise UsageError(
            f"{flag}: expected a {what} name ({naming.PUBSUB_NAME_RULE}) or projects/P/{kind}/{what[0].upper()}, "
            f"found {given!r}"
        )
    chosen = project or _project_from(env)
    if not chosen:
        raise UsageError(
            f"--project: expected the project of {what} {given} (--project, PUBSUB_PROJECT_ID with the emulator, "
            f"GOOGLE_CLOUD_PROJECT, or {flag} projects/P/{kind}/{what[0].upper()}), found none"
        )
    if not naming.PROJECT_ID.match(chosen):
        raise UsageError(f"--project: expected {naming.PROJECT_ID_RULE}, found {chosen!r}")
    return (naming.topic_path if kind == "topics" else naming.subscription_path)(chosen, given)


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
