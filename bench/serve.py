"""One bench fake server in a process of its own: `python -m bench.serve kfp [--admit-rate R] [--quota-every Q]
[--max-in-flight M --run-seconds D]` or `... metadata`.

It serves on 127.0.0.1, prints `port <n>` on stdout once it listens, and runs until SIGTERM or SIGINT. The servers
are the test suite's (tests.servers), wrapped so that the bench, in another process, can read what they saw:
`GET /_bench/stats?since=<i>` answers the requests answered since the i-th, each as
`[time.time(), method, path, status, identity, run key]`, where identity is the `message` parameter of a created
run (the bench puts the trigger's gs:// URI there on every side, so runs per trigger can be counted) and the run key
its display name (the bench publishes each run's end with it), plus the metadata server's access-token count. The
wrappers keep no request bodies: the base server's own request log is cleared on every stats call, so memory stays
flat over thousands of runs.

With --max-in-flight the KFP fake holds at most M runs in flight, as a backend with a quota of concurrent runs does:
each run succeeds D seconds after its creation (seen by the next request about it), and a creation while M are in
flight is refused 429 with Retry-After. The stats then carry `peak_in_flight` (the most it ever held) and
`refused_in_flight` (creations it refused for that), so that the bench reads what the backend saw, not what Relay
says it did.

The servers speak HTTP/1.1 here, so a client's keep-alive connection is kept as the real KFP API and metadata server
keep it (the test servers answer HTTP/1.0, closing every connection: each request would pay a new connection and a
new server thread). Every answer carries its Content-Length, which is all HTTP/1.1 persistence needs.
"""

from __future__ import annotations

import argparse
import heapq
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from tests.servers.base import LoopbackServer, Request, Response

STATS = "/_bench/stats"


class _Recorder:
    """What a wrapped server answered, in order: an append-only log read by index."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: list[tuple[float, str, str, int, str | None, str | None]] = []

    def add(self, request: Request, response: Response) -> None:
        identity = name = None
        if request.method == "POST" and request.path.endswith("/runs") and response.status == 200:
            body = request.json if isinstance(request.json, dict) else {}
            config = body.get("runtime_config") or {}
            parameters = config.get("parameters") if isinstance(config, dict) else None
            if isinstance(parameters, dict) and isinstance(parameters.get("message"), str):
                identity = parameters["message"]
            name = body.get("display_name") if isinstance(body.get("display_name"), str) else None
        with self._lock:
            self._log.append((time.time(), request.method, request.path, response.status, identity, name))

    def since(self, index: int) -> list[tuple[float, str, str, int, str | None, str | None]]:
        with self._lock:
            return self._log[index:]


def _stats_response(server: LoopbackServer, recorder: _Recorder, request: Request, extra: dict[str, Any]) -> Response:
    server.clear_requests()  # the base class keeps every request with its body: drop them, the log is ours
    since = int(request.param("since") or 0)
    return Response.json(200, {"log": recorder.since(since), **extra})


class _InFlight:
    """Runs in flight on a backend that holds at most `most` at once, each ending `seconds` after its creation."""

    def __init__(self, most: int, seconds: float) -> None:
        self.most, self.seconds = most, seconds
        self.lock = threading.Lock()  # held across a creation, so that two at once cannot both take the last place
        self.ends: list[tuple[float, str]] = []  # (when it ends, run id), a heap
        self.peak = 0
        self.refused = 0

    def ended(self) -> list[str]:
        """The runs whose time is up, taken off the count (call with the lock held)."""
        now, done = time.monotonic(), []
        while self.ends and self.ends[0][0] <= now:
            done.append(heapq.heappop(self.ends)[1])
        return done

    def refusal(self) -> Response | None:
        if len(self.ends) < self.most:
            return None
        self.refused += 1
        body = {"error": "too many runs in flight", "code": 8, "message": "too many runs in flight", "details": []}
        return Response.json(429, body, {"Retry-After": "1"})

    def started(self, run_id: str) -> None:
        heapq.heappush(self.ends, (time.monotonic() + self.seconds, run_id))
        self.peak = max(self.peak, len(self.ends))


def kfp_server(
    admit_rate: float | None, quota_every: int = 3, max_in_flight: int | None = None, run_seconds: float = 1.0
) -> LoopbackServer:
    from tests.servers.kfp import KfpApiServer

    class BenchKfp(KfpApiServer):
        def __init__(self) -> None:
            super().__init__(admit_rate=admit_rate, quota_every=quota_every)
            self.recorder = _Recorder()
            self.in_flight = _InFlight(max_in_flight, run_seconds) if max_in_flight else None

        def handle(self, request: Request) -> Response:
            if request.path == STATS:
                admitted, refused = self.run_creations
                extra = {"admitted": admitted, "refused": refused}
                if self.in_flight is not None:
                    extra |= {"peak_in_flight": self.in_flight.peak, "refused_in_flight": self.in_flight.refused}
                return _stats_response(self, self.recorder, request, extra)
            response = self._limited(request) if self.in_flight is not None else super().handle(request)
            self.recorder.add(request, response)
            return response

        def _limited(self, request: Request) -> Response:
            limit = self.in_flight
            assert limit is not None
            creation = request.method == "POST" and request.path.endswith("/runs")
            with limit.lock:
                for run_id in limit.ended():
                    self.set_run_state(run_id, "SUCCEEDED")
                if creation:
                    response = limit.refusal() or super().handle(request)
                    if response.status == 200:
                        limit.started(str(json.loads(response.body)["run_id"]))
                    return response
            return super().handle(request)

    return BenchKfp()


def metadata_server() -> LoopbackServer:
    from tests.servers.metadata import MetadataServer

    class BenchMetadata(MetadataServer):
        def __init__(self) -> None:
            super().__init__()
            self.recorder = _Recorder()

        def handle(self, request: Request) -> Response:
            if request.path == STATS:
                return _stats_response(self, self.recorder, request, {"tokens": self.token_fetches})
            response = super().handle(request)
            self.recorder.add(request, response)
            return response

    return BenchMetadata()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("kind", choices=("kfp", "metadata"))
    parser.add_argument("--admit-rate", type=float, default=None, help="kfp: run creations admitted per second")
    parser.add_argument("--quota-every", type=int, default=3, help="kfp: every n-th refusal a quota 503 (3)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="kfp: the most runs in flight at once")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="kfp: how long each run takes (1)")
    args = parser.parse_args(argv)
    from tests.servers import base

    base._Handler.protocol_version = "HTTP/1.1"  # this process only: see the module docstring
    server = (
        kfp_server(args.admit_rate, args.quota_every, args.max_in_flight, args.run_seconds)
        if args.kind == "kfp"
        else metadata_server()
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(f"port {server.port}", flush=True)
        while not stop.wait(0.5):
            pass
        errors = server.errors
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
