"""KfpBackend against a loopback KFP v2beta1 API that checks every request body against kfp_server_api's models."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from relay.adapters.http import Timeouts
from relay.adapters.kfp_backend import KfpBackend
from relay.errors import (
    BackendBusyError,
    BackendUnavailableError,
    LaunchRejectedError,
    LeaseExpiredError,
    SubmitUncertainError,
)
from relay.ports import TokenSource
from tests.conftest import echo_request
from tests.integration.support import eventually
from tests.servers.base import Request, Response, TokenCheck
from tests.servers.kfp import KfpApiServer
from tests.servers.oauth import OAuthTokenServer


def test_runs_go_into_one_experiment_named_by_run_key(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    first = backend.launch(echo_request("echo-1"))
    second = backend.launch(echo_request("echo-2", count=3))
    assert [run["display_name"] for run in kfp_server.runs] == ["echo-1", "echo-2"]
    assert (
        first.run_id == kfp_server.runs[0]["run_id"] and first.url == f"{kfp_server.url}/#/runs/details/{first.run_id}"
    )
    assert second.run_id != first.run_id
    [experiment] = kfp_server.experiments
    assert experiment["display_name"] == "relay"
    assert {run["experiment_id"] for run in kfp_server.runs} == {experiment["experiment_id"]}
    assert len(kfp_server.requests_to("/apis/v2beta1/experiments")) == 2  # one lookup, one create, per instance
    assert kfp_server.runs[1]["request_body"]["runtime_config"]["parameters"]["count"] == 3


def test_a_run_s_labels_are_in_its_description_as_a_v2beta1_run_has_no_labels(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    labels = {"team": "assay", "relay-tenant": "lab", "relay-pipeline": "echo", "relay-trigger": "object"}
    KfpBackend(kfp_server.url, "relay", tokens).launch(replace(echo_request("echo-1"), labels=labels))
    [run] = kfp_server.runs
    assert run["description"] == "team=assay relay-tenant=lab relay-pipeline=echo relay-trigger=object"


def test_find_run_looks_up_the_display_name(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    assert backend.find_run("echo-1") is None
    launched = backend.launch(echo_request("echo-1"))
    backend.launch(echo_request("echo-10"))
    assert backend.find_run("echo-1") == launched


def test_a_401_refreshes_the_token_once_and_retries(
    kfp_server: KfpApiServer, tokens: TokenSource, oauth: OAuthTokenServer
):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.launch(echo_request("echo-1"))
    oauth.revoke_all()  # the server now refuses the cached token
    backend.launch(echo_request("echo-2"))
    assert oauth.token_fetches == 2 and len(kfp_server.runs) == 2
    statuses = [r.faulted for r in kfp_server.requests]
    assert not any(statuses)


def test_tokens_are_not_fetched_per_launch(kfp_server: KfpApiServer, tokens: TokenSource, oauth: OAuthTokenServer):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    for number in range(5):
        backend.launch(echo_request(f"echo-{number}"))
    assert oauth.token_fetches == 1
    assert {r.header("authorization") for r in kfp_server.requests} == {f"Bearer {tokens.token()}"}


def test_a_request_the_server_refuses_is_a_rejection(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    with pytest.raises(LaunchRejectedError, match="the KFP API answered 400"):
        backend.launch(echo_request("echo-1", colour="red"))


def test_a_failed_submit_that_may_have_reached_the_server_is_uncertain(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")
    kfp_server.fail_next(1, 504, path_prefix="/apis/v2beta1/runs")  # a proxy timed out; the run may exist
    with pytest.raises(SubmitUncertainError, match="answered 504"):
        backend.launch(echo_request("echo-1"))
    kfp_server.fail_next(1, 429, path_prefix="/apis/v2beta1/runs")  # refused outright: surely not created
    with pytest.raises(BackendUnavailableError, match="answered 429") as refused:
        backend.launch(echo_request("echo-1"))
    assert not isinstance(refused.value, SubmitUncertainError)
    assert backend.launch(echo_request("echo-1")).run_id == kfp_server.runs[0]["run_id"]


def test_losing_the_race_to_create_the_experiment_means_using_the_winners(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    KfpBackend(kfp_server.url, "relay", tokens).find_run("warm-up")  # another instance made the experiment
    kfp_server.clear_requests()
    # ... just after this one looked it up and found nothing.
    kfp_server.fail_next(1, 200, body={}, path_prefix="/apis/v2beta1/experiments")
    run = KfpBackend(kfp_server.url, "relay", tokens).launch(echo_request("echo-1"))
    assert run.run_id == kfp_server.runs[0]["run_id"] and len(kfp_server.experiments) == 1
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in kfp_server.requests] == [
        ("GET", "experiments"),
        ("POST", "experiments"),  # 409: it exists
        ("GET", "experiments"),
        ("POST", "runs"),
    ]


class SlowLookups(KfpApiServer):
    """Holds every experiment lookup until `release` is set, so that first launches on other threads overlap it;
    while `unavailable`, the held lookup is then answered 503."""

    def __init__(self, *, token_check: TokenCheck) -> None:
        super().__init__(token_check=token_check)
        self.release = threading.Event()
        self.unavailable = False

    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path.endswith("/experiments"):
            self.release.wait(timeout=10)
            if self.unavailable:
                return self.fault_response(503)
        return super().handle(request)


def launch_concurrently(backend: KfpBackend, server: SlowLookups, keys: list[str]) -> list[str | BaseException]:
    """Each key's run id (or error) from a thread of its own, the first experiment lookup held a while."""
    results: list[str | BaseException] = [""] * len(keys)

    def launch(index: int) -> None:
        try:
            results[index] = backend.launch(echo_request(keys[index])).run_id
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=launch, args=(index,)) for index in range(len(keys))]
    for thread in threads:
        thread.start()
    eventually(lambda: len(server.requests_to("/apis/v2beta1/experiments", "GET")) > 0)
    time.sleep(0.3)  # the other threads reach the lookup meanwhile: without single flight, each would send one
    server.release.set()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_first_launches_look_the_experiment_up_once(oauth: OAuthTokenServer, tokens: TokenSource):
    with SlowLookups(token_check=oauth.is_valid) as server:
        backend = KfpBackend(server.url, "relay", tokens)
        run_ids = launch_concurrently(backend, server, [f"echo-{n}" for n in range(8)])
    assert server.errors == []
    assert sorted(map(str, run_ids)) == sorted(run["run_id"] for run in server.runs) and len(server.runs) == 8
    lookups = [(r.method, r.path.rsplit("/", 1)[-1]) for r in server.requests if r.path.endswith("/experiments")]
    assert lookups == [("GET", "experiments"), ("POST", "experiments")]
    assert {run["experiment_id"] for run in server.runs} == {server.experiments[0]["experiment_id"]}


def test_a_failed_lookup_fails_its_waiters_too_and_the_next_launch_looks_again(
    oauth: OAuthTokenServer, tokens: TokenSource
):
    with SlowLookups(token_check=oauth.is_valid) as server:
        server.unavailable = True
        backend = KfpBackend(server.url, "relay", tokens)
        failed = launch_concurrently(backend, server, ["echo-1", "echo-2", "echo-3"])
        assert all(isinstance(error, BackendUnavailableError) for error in failed) and server.runs == []
        assert [r.method for r in server.requests] == ["GET"]
        server.unavailable = False
        server.clear_requests()
        backend.launch(echo_request("echo-1"))
    assert [r.method for r in server.requests] == ["GET", "POST", "POST"]  # lookup, create it, the run


def test_a_warm_launch_is_one_request_and_errors_do_not_forget_the_experiment(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.launch(echo_request("echo-1"))
    kfp_server.fail_next(1, 503, path_prefix="/apis/v2beta1/runs")
    with pytest.raises(SubmitUncertainError):
        backend.launch(echo_request("echo-2"))
    kfp_server.clear_requests()
    backend.launch(echo_request("echo-3"))
    assert [(r.method, r.path) for r in kfp_server.requests] == [("POST", "/apis/v2beta1/runs")]


def test_an_experiment_deleted_under_the_instance_is_looked_up_again(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.launch(echo_request("echo-1"))
    gone = {"error": "experiment not found", "code": 5, "message": "experiment not found", "details": []}
    kfp_server.fail_next(1, 404, body=gone, path_prefix="/apis/v2beta1/runs")
    with pytest.raises(BackendUnavailableError, match="answered 404") as missing:
        backend.launch(echo_request("echo-2"))
    assert not isinstance(missing.value, SubmitUncertainError)  # refused: surely nothing was made
    kfp_server.clear_requests()
    backend.launch(echo_request("echo-2"))
    assert [r.method for r in kfp_server.requests] == ["GET", "POST"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after"),
    [
        (429, {"error": "slow down", "code": 8, "message": "slow down"}, {"Retry-After": "7"}, 7.0),
        (503, {"error": "Quota exceeded for quota metric runs", "code": 14, "message": "Quota exceeded"}, {}, None),
        (500, {"error": "RESOURCE_EXHAUSTED", "code": 8, "message": "too many runs"}, {}, None),
    ],
    ids=["429-retry-after", "503-quota-exceeded", "resource-exhausted"],
)
def test_a_refusal_for_load_is_busy_and_surely_made_nothing(
    kfp_server: KfpApiServer, tokens: TokenSource, status: int, body: object, headers: dict[str, str], retry_after
):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")
    kfp_server.fail_next(1, status, body=body, headers=headers, path_prefix="/apis/v2beta1/runs")
    with pytest.raises(BackendBusyError) as busy:
        backend.launch(echo_request("echo-1"))
    assert busy.value.retry_after == retry_after and kfp_server.runs == []


def test_a_rejection_that_mentions_a_quota_is_still_a_rejection(kfp_server: KfpApiServer, tokens: TokenSource):
    # A 400 may echo the trigger's own words: its body is never read as a refusal for load.
    echoed = {"error": "Invalid input error: note='Quota exceeded'", "code": 3, "message": "note='Quota exceeded'"}
    kfp_server.fail_next(1, 400, body=echoed, path_prefix="/apis/v2beta1/runs")
    with pytest.raises(LaunchRejectedError):
        KfpBackend(kfp_server.url, "relay", tokens).launch(echo_request("echo-1"))


def test_a_stalled_submit_times_out_as_uncertain_and_holds_up_no_other_call(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    backend = KfpBackend(kfp_server.url, "relay", tokens, timeouts=Timeouts(connect=0.5, read=0.5))
    backend.find_run("warm-up")
    release = threading.Event()
    kfp_server.stall_next_run(create=True, release=release)
    try:
        with pytest.raises(SubmitUncertainError, match="did not answer"):
            backend.launch(echo_request("echo-1"))
        assert kfp_server.stalled == 1 and backend.find_run("echo-1") is not None  # made, answered late
        backend.launch(echo_request("echo-2"))
    finally:
        release.set()


def test_nothing_is_sent_past_the_deadline(kfp_server: KfpApiServer, tokens: TokenSource):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")
    kfp_server.clear_requests()
    expired = replace(echo_request("echo-1"), deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(LeaseExpiredError):
        backend.launch(expired)
    assert kfp_server.requests == []


def test_an_unreachable_server_surely_got_nothing(tokens: TokenSource, kfp_server: KfpApiServer):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")
    kfp_server.stop()
    with pytest.raises(BackendUnavailableError) as unreachable:
        backend.launch(echo_request("echo-1"))
    assert not isinstance(unreachable.value, SubmitUncertainError)
