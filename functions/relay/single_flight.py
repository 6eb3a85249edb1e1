"""Work keyed by a name, at most one at a time per key in this process, for work whose callers need it done, not
done once each: the drain a run's end asks for."""

from __future__ import annotations

import threading


class SingleFlight:
    """A caller that comes while its key's work runs asks it to go round once more and leaves at once: a burst of
    callers costs a few rounds of the work, not one each, and none of them is lost (the runner asks `again` before
    it leaves, under the same lock the callers' asking takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._asked: set[str] = set()

    def enter(self, key: str) -> bool:
        """True: run the work now (then `again` until False, or `leave`); False: it runs, and will go round again."""
        with self._lock:
            if key in self._running:
                self._asked.add(key)
                return False
            self._running.add(key)
            return True

    def again(self, key: str) -> bool:
        """Whether someone asked since the round began (go round once more); else the runner has left."""
        with self._lock:
            if key in self._asked:
                self._asked.discard(key)
                return True
            self._running.discard(key)
            return False

    def leave(self, key: str) -> None:
        with self._lock:
            self._running.discard(key)
            self._asked.discard(key)
