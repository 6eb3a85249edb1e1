"""Destination adapters against loopback servers that speak each platform's API; a log of where sockets go."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_logs: list[list[str]] = []
_lock = threading.Lock()
_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _logs:
        return
    if event == "socket.getaddrinfo":
        host = str(args[0])
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = str(args[1][0])
    else:
        return
    with _lock:
        for log in _logs:
            log.append(host)


@contextmanager
def hosts_contacted() -> Iterator[list[str]]:
    """Every host this process resolves or connects to (in any thread) inside the block, in order."""
    global _installed
    if not _installed:
        # An audit hook sees the clients' own sockets, whatever HTTP library they use; it cannot be removed, so
        # it is installed once and does nothing while no block is open.
        sys.addaudithook(_audit)
        _installed = True
    log: list[str] = []
    with _lock:
        _logs.append(log)
    try:
        yield log
    finally:
        with _lock:
            _logs.remove(log)
