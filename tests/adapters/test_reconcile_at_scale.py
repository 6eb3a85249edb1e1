"""Reconcile over hundreds of runs in flight on the loopback KFP and Vertex servers, with records in a real results
folder: every run that ends is recorded within ceil(in flight / per tick) ticks, trouble at the backend ends a tick
after one call, and two ticks at once record each end once."""

from __future__ import annotations

import itertools
import math
import random
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from relay import lifecycle, naming, records
from relay.adapters.kfp_backend import KfpBackend
from relay.ports import PipelineBackend, TokenSource
from relay.service import Relay
from tests.adapters.test_run_lifecycle import launched, relay_on, vertex
from tests.conftest import NOW, echo_request
from tests.fakes import RecordingNotifier
from tests.servers.base import Request, Response, TokenCheck
from tests.servers.kfp import KfpApiServer
from tests.servers.oauth import OAuthTokenServer
from tests.servers.vertex import VertexServer

PER_TICK = 50
KFP_RUNS = "/apis/v2beta1/runs/"
VERTEX_JOBS = "/v1/projects/relay-test/locations/us-central1/pipelineJobs/"
ENDINGS = {"kfp": ("SUCCEEDED", "FAILED", "CANCELED"), "vertex": ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED")}


class Loopback:
    """One backend on its loopback server, with runs made through the backend and set going on the server."""

    def __init__(self, kind: str, kfp: KfpApiServer, vertex_server: VertexServer, tokens: TokenSource) -> None:
        self.kind = kind
        self.server = kfp if kind == "kfp" else vertex_server
        self.prefix = KFP_RUNS if kind == "kfp" else VERTEX_JOBS
        self.backend: PipelineBackend = (
            KfpBackend(kfp.url, "relay", tokens) if kind == "kfp" else vertex(vertex_server, tokens)
        )
        self.run_ids: dict[str, str] = {}

    def start(self, relay: Relay, count: int) -> list[str]:
        keys = [f"echo-{n:03}" for n in range(count)]
        request = echo_request("echo")  # the package parsed once
        for key in keys:
            self.run_ids[key] = run_id = self.backend.launch(replace(request, run_key=key)).run_id
            self.set(key, "RUNNING")
            launched(relay, key, run_id)
        return keys

    def set(self, key: str, state: str) -> None:
        if isinstance(self.server, KfpApiServer):
            self.server.set_run_state(self.run_ids[key], state)
        else:
            self.server.set_state(key, f"PIPELINE_STATE_{state}" if state == "RUNNING" else state)

    def gets(self) -> int:
        return len(self.server.requests_to(self.prefix, "GET"))


@pytest.fixture(params=["kfp", "vertex"])
def loopback(request, kfp_server: KfpApiServer, vertex_server: VertexServer, tokens: TokenSource) -> Loopback:
    return Loopback(request.param, kfp_server, vertex_server, tokens)


def ended(relay: Relay, key: str) -> bool:
    return naming.result_record(relay.settings.results_uri, key) in recorded(relay)


def recorded(relay: Relay) -> set[str]:
    """The result records there are, by URI."""
    return {uri for uri in relay.store.list(relay.settings.results_uri) if uri.endswith("/result.json")}


def test_every_run_that_ends_among_500_in_flight_is_recorded_within_the_bound(loopback: Loopback, tmp_path: Path):
    relay = relay_on(tmp_path, loopback.backend)
    keys = loopback.start(relay, 500)
    bound = math.ceil(len(keys) / PER_TICK)
    rng = random.Random(23)
    going = list(keys)
    ended_before: dict[str, int] = {}  # key -> the tick it ended before
    took: dict[str, int] = {}  # key -> how many ticks it took to be recorded
    for tick_number in range(2 * bound):
        # Old and new alike end, the newest key among them each time.
        for key in [*rng.sample(going[:-1], 6), going[-1]]:
            loopback.set(key, rng.choice(ENDINGS[loopback.kind]))
            going.remove(key)
            ended_before[key] = tick_number
        loopback.server.clear_requests()
        tick = lifecycle.reconcile(relay, limit=PER_TICK)
        assert tick.stopped == "" and loopback.gets() == len(tick.seen) == min(PER_TICK, tick.unfinished or 0)
        results = recorded(relay)
        for key in ended_before.keys() - took.keys():
            if naming.result_record(relay.settings.results_uri, key) in results:
                took[key] = tick_number - ended_before[key] + 1
    late = {key: at for key, at in ended_before.items() if key not in took and 2 * bound - at >= bound}
    assert late == {} and max(took.values()) <= bound, f"bound {bound} ticks: took {max(took.values())}"
    assert not {naming.result_record(relay.settings.results_uri, key) for key in going} & recorded(relay)


@pytest.mark.parametrize(
    ("status", "body", "headers", "wait"),
    [
        (503, "Service Unavailable", {"Content-Type": "text/plain", "Retry-After": "30"}, 30),
        (500, None, {}, None),
        (502, "<html>Bad Gateway</html>", {"Content-Type": "text/html"}, None),
        (429, None, {"Retry-After": "5"}, 5),
    ],
    ids=["503-text", "500", "502-html", "429"],
)
def test_a_5xx_or_429_ends_the_tick_after_one_call_and_the_next_starts_there(
    loopback: Loopback, tmp_path: Path, status: int, body: str | None, headers: dict[str, str], wait: int | None
):
    relay = relay_on(tmp_path, loopback.backend)
    keys = loopback.start(relay, 60)
    loopback.server.clear_requests()
    loopback.server.fail_next(1, status, body, headers, path_prefix=loopback.prefix)
    tick = lifecycle.reconcile(replace(relay, clock=lambda: NOW), limit=PER_TICK)
    assert loopback.gets() == 1 and tick.seen == () and tick.stopped.startswith(f"stopped at {keys[0]}: ")
    assert str(status) in tick.stopped
    if wait is not None:
        held = lifecycle.reconcile(replace(relay, clock=lambda: NOW + timedelta(seconds=wait - 1)))
        assert held.seen == () and "asked for a wait" in held.stopped and loopback.gets() == 1
    later = replace(relay, clock=lambda: NOW + timedelta(seconds=wait or 0))
    resumed = lifecycle.reconcile(later, limit=PER_TICK)
    assert [seen.run_key for seen in resumed.seen] == keys[:PER_TICK] and resumed.stopped == ""


class FailsTheThirdGet(KfpApiServer):
    """The loopback KFP, answering its third GET of a run with a plain 503."""

    def __init__(self, *, token_check: TokenCheck) -> None:
        super().__init__(token_check=token_check)
        self._gets = itertools.count(1)

    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path.startswith(KFP_RUNS) and next(self._gets) == 3:
            return Response(503, b"Service Unavailable", {"Content-Type": "text/plain"})
        return super().handle(request)


def test_what_a_tick_reached_before_a_503_is_recorded(oauth: OAuthTokenServer, tokens: TokenSource, tmp_path: Path):
    with FailsTheThirdGet(token_check=oauth.is_valid) as server:
        loopback = Loopback("kfp", server, VertexServer(), tokens)
        relay = relay_on(tmp_path, loopback.backend)
        keys = loopback.start(relay, 5)
        for key in keys:
            loopback.set(key, "FAILED")
        tick = lifecycle.reconcile(relay)
        assert [(seen.run_key, seen.action) for seen in tick.seen] == [(keys[0], "result"), (keys[1], "result")]
        assert [key for key in keys if ended(relay, key)] == keys[:2] and tick.after == keys[1]
        assert [seen.run_key for seen in lifecycle.reconcile(relay).seen] == keys[2:]
        assert all(ended(relay, key) for key in keys)


def test_two_reconcilers_at_once_record_each_end_once(loopback: Loopback, tmp_path: Path):
    notifier = RecordingNotifier()
    relay = replace(relay_on(tmp_path, loopback.backend), notifier=notifier)
    keys = loopback.start(relay, 200)
    rng = random.Random(7)
    for key in keys:
        loopback.set(key, rng.choice(ENDINGS[loopback.kind]))
    cursor = naming.reconcile_cursor(relay.settings.results_uri, loopback.backend.name)
    ticks: list[lifecycle.Tick] = []
    for _ in range(math.ceil(len(keys) / 20) + 1):
        threads = [threading.Thread(target=lambda: ticks.append(lifecycle.reconcile(relay, limit=20))) for _ in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        saved = records.decode(relay.store.read(cursor).data)
        assert saved["after"] in keys  # whole, one tick's place: never torn, never a key that is not a run's
    assert all(ended(relay, key) for key in keys)
    published = sorted(attributes["run_key"] for _, attributes in notifier.messages)
    assert published == keys  # each end recorded, and published, exactly once
    assert all(tick.stopped == "" for tick in ticks)
