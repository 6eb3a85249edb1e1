"""The one thing this client adds to urllib3: an answer's head read within one read timeout in all.

http.client reads an answer's status line and headers through many reads of the socket, and a socket's timeout
bounds each read, not their sum: a server trickling its head a byte at a time would hold a call for as long as it
liked. A watchdog thread (one per process, asleep until the earliest deadline it watches) shuts the socket down
when the head is late, which wakes the read at once; urllib3's own HTTPResponse.shutdown() interrupts a read the
same way. The body is bounded by the client itself, read by read (http.py). A module of its own: urllib3's pool and
connection classes, extended, are none of the client's logic.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class Watchdog:
    """Calls each watched `cut` when its deadline passes, unless it was unwatched before."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._watched: dict[int, tuple[float, Callable[[], None]]] = {}
        self._keys = itertools.count()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, cut: Callable[[], None]) -> int:
        key = next(self._keys)
        with self._changed:
            self._watched[key] = (deadline, cut)
            if self._thread is None or not self._thread.is_alive():  # none yet, or not in this forked process
                self._thread = threading.Thread(target=self._run, name="relay-http-deadlines", daemon=True)
                self._thread.start()
            if deadline < self._wake_at:
                self._changed.notify()
        return key

    def unwatch(self, key: int) -> bool:
        """True when the deadline had not passed (`cut` was not called)."""
        with self._changed:
            return self._watched.pop(key, None) is not None

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (deadline, cut) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[key]
                        with contextlib.suppress(OSError):  # already closed: the read it would wake has ended
                            cut()
                self._wake_at = min((deadline for deadline, _ in self._watched.values()), default=math.inf)
                self._changed.wait(None if self._wake_at == math.inf else self._wake_at - now)


WATCHDOG = Watchdog()


class _HeadInTime:
    """A connection whose answer's head comes within its read timeout (urllib3 sets `timeout` to the read timeout,
    or what is left of the call if less, before it reads the answer)."""

    sock: Any
    timeout: Any  # seconds, as urllib3 sets it before reading an answer

    def getresponse(self) -> Any:
        limit = self.timeout
        # TLS inside a TLS proxy's tunnel (urllib3's SSLTransport) has no shutdown: its reads stay bounded one by one.
        shutdown = getattr(self.sock, "shutdown", None)
        if not isinstance(limit, (int, float)) or shutdown is None:  # no timeout set: nothing to keep
            return super().getresponse()  # type: ignore[misc]
        key = WATCHDOG.watch(time.monotonic() + limit, functools.partial(shutdown, socket.SHUT_RDWR))
        try:
            response = super().getresponse()  # type: ignore[misc]
        except BaseException as exc:
            if not WATCHDOG.unwatch(key):
                raise TimeoutError(f"the answer's head took longer than {limit:g} s") from exc
            raise
        if not WATCHDOG.unwatch(key):  # the head read up to the shutdown may be cut short: never use it
            response.close()
            raise TimeoutError(f"the answer's head took longer than {limit:g} s")
        return response


class _Connection(_HeadInTime, HTTPConnection):
    pass


class _TlsConnection(_HeadInTime, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


# For PoolManager.pool_classes_by_scheme: the pools urllib3 makes, with these connections.
POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TlsPool}
