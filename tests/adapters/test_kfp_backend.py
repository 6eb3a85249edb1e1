"""KfpBackend through the real kfp.Client against a loopback KFP v2beta1 API that checks every request."""

from __future__ import annotations

import pytest

from relay.adapters.kfp_backend import KfpBackend
from relay.errors import BackendUnavailableError, LaunchRejectedError, SubmitUncertainError
from relay.ports import TokenSource
from tests.conftest import echo_request
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


def test_losing_the_race_to_create_the_experiment_is_transient_not_a_rejection(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")  # the client exists; the experiment is looked up afresh below
    backend._experiment_id = None
    kfp_server.fail_next(1, 409, path_prefix="/apis/v2beta1/experiments")
    with pytest.raises(BackendUnavailableError, match="answered 409") as lost:
        backend.launch(echo_request("echo-1"))
    assert not isinstance(lost.value, SubmitUncertainError)
    assert backend.launch(echo_request("echo-1")).run_id == kfp_server.runs[0]["run_id"]


def test_an_unreachable_server_surely_got_nothing(tokens: TokenSource, kfp_server: KfpApiServer):
    backend = KfpBackend(kfp_server.url, "relay", tokens)
    backend.find_run("warm-up")
    kfp_server.stop()
    with pytest.raises(BackendUnavailableError) as unreachable:
        backend.launch(echo_request("echo-1"))
    assert not isinstance(unreachable.value, SubmitUncertainError)
