"""The watchdog that bounds an answer's head: a blocked read is woken when its deadline passes, never before."""

from __future__ import annotations

import functools
import socket
import time

from relay.adapters.deadlines import Watchdog


def test_a_read_blocked_past_its_deadline_is_woken_and_one_unwatched_in_time_is_left_alone():
    watchdog = Watchdog()
    reader, writer = socket.socketpair()
    spare, other = socket.socketpair()
    with reader, writer, spare, other:
        reader.settimeout(30)  # only if the watchdog never woke it
        late = watchdog.watch(time.monotonic() + 0.2, functools.partial(reader.shutdown, socket.SHUT_RDWR))
        kept = watchdog.watch(time.monotonic() + 3600, functools.partial(spare.shutdown, socket.SHUT_RDWR))
        assert reader.recv(1) == b""  # woken as if the server had closed
        assert not watchdog.unwatch(late)  # the caller learns its read was cut short
        assert watchdog.unwatch(kept)
        other.sendall(b"x")
        assert spare.recv(1) == b"x"  # still open
