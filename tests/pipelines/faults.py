"""A TCP proxy on 127.0.0.1 that cuts one connection mid-transfer, and counts the bytes each way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

PIECE = 64 * 1024


class CuttingProxy:
    """Forwards every connection to `upstream`; the first one to carry more than `cut_up_after` bytes towards the
    server (or `cut_down_after` bytes back) is cut there: the server gets exactly that many, then both sides are
    closed. Later connections pass untouched.

    `up` counts what the proxy received from clients, `down` what it received from the server: what was sent.
    """

    def __init__(
        self, upstream: tuple[str, int], *, cut_up_after: int | None = None, cut_down_after: int | None = None
    ):
        self._upstream = upstream
        self._limits = {"up": cut_up_after, "down": cut_down_after}
        self.up = self.down = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._pairs: dict[tuple[socket.socket, socket.socket], int] = {}

    def __enter__(self) -> Self:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            _cut(pair)  # idle keep-alive connections: their pumps end, and close them
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            pair = (client, socket.create_connection(self._upstream))
            with self._lock:
                self._pairs[pair] = 2  # pumps still running
            self._spawn(self._pump, pair, "up")
            self._spawn(self._pump, pair, "down")

    def _pump(self, pair: tuple[socket.socket, socket.socket], way: str) -> None:
        source, target = pair if way == "up" else pair[::-1]
        carried = 0
        try:
            while piece := source.recv(PIECE):
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(piece))
                    limit = self._limits[way]
                    if limit is not None and carried + len(piece) > limit:
                        self._limits[way] = None  # one cut per proxy
                        self.cuts += 1
                        target.sendall(piece[: limit - carried])
                        _cut(pair)
                        break
                target.sendall(piece)
                carried += len(piece)
            else:
                target.shutdown(socket.SHUT_WR)  # pass the half-close on, as TCP would
        except OSError:
            _cut(pair)
        finally:
            with self._lock:
                self._pairs[pair] -= 1
                last = not self._pairs[pair]
                if last:
                    del self._pairs[pair]
            if last:
                for end in pair:
                    end.close()


def _cut(pair: tuple[socket.socket, ...]) -> None:
    # shutdown, not close: it wakes the other pump blocked in recv, and the peers see the connection end now.
    for end in pair:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
