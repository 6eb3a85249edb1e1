"""Fail fast when an *_EMULATOR_HOST names nothing: the clients would retry a refused connection for minutes."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from relaycli.errors import UsageError

PROBE_TIMEOUT = 2.0


def check_emulator(env: Mapping[str, str], variable: str) -> None:
    """A UsageError when `variable` is set and nothing accepts a connection at the address it names."""
    value = env.get(variable, "").strip()
    if not value:
        return
    parsed = urlsplit(value if "://" in value else f"http://{value}")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        host = parsed.hostname or ""
    except ValueError:
        raise UsageError(f"{variable}: expected host:port or http://host:port, found {value!r}") from None
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            pass
    except OSError as exc:
        raise UsageError(
            f"{variable}: expected an emulator listening at {value}, found {exc.strerror or exc} "
            "(is `make up` still running? unset it to use the real service)"
        ) from None
