from __future__ import annotations

import pytest

from relay.config import DEFAULT_CATALOG, Settings, parse_duration
from relay.errors import ConfigError


def test_local_defaults_need_only_a_results_location():
    settings = Settings.from_env({"RELAY_RESULTS_URI": "gs://r/"})
    assert settings.backend == "local" and settings.auth == "none"
    assert settings.results_uri == "gs://r" and settings.catalog_uri == str(DEFAULT_CATALOG)


def test_every_problem_is_reported_in_one_error():
    env = {
        "RELAY_BACKEND": "vertex",
        "RELAY_AUTH": "iap",
        "RELAY_NOTIFY_TOPIC": "relay-notify",
        "RELAY_MAX_EVENT_AGE": "soon",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    named = " ".join(caught.value.problems)
    for variable in (
        "RELAY_RESULTS_URI",
        "RELAY_VERTEX_PROJECT",
        "RELAY_VERTEX_LOCATION",
        "RELAY_VERTEX_PIPELINE_ROOT",
        "RELAY_KFP_AUDIENCE",
        "RELAY_NOTIFY_TOPIC",
        "RELAY_MAX_EVENT_AGE",
    ):
        assert variable in named
    assert len(caught.value.problems) == 7


def test_kfp_with_an_audience_uses_iap_tokens():
    settings = Settings.from_env(
        {
            "RELAY_RESULTS_URI": "gs://r",
            "RELAY_BACKEND": "kfp",
            "RELAY_KFP_HOST": "https://k",
            "RELAY_KFP_AUDIENCE": "a",
        }
    )
    assert settings.auth == "iap" and settings.kfp_experiment == "relay"


def test_the_static_token_never_shows_in_repr():
    settings = Settings.from_env(
        {
            "RELAY_RESULTS_URI": "r",
            "RELAY_BACKEND": "kfp",
            "RELAY_KFP_HOST": "https://kfp.example",
            "RELAY_AUTH": "static",
            "RELAY_STATIC_TOKEN": "s3cr3t",
        }
    )
    assert settings.static_token == "s3cr3t" and "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1.5h", 5400), ("soon", None), ("-1", None)],
)
def test_durations(text: str, seconds: float | None):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("host", "auth", "accepted"),
    [
        ("https://kfp.example", "metadata", True),
        ("http://127.0.0.1:8888", "metadata", True),
        ("http://localhost:8888", "static", True),
        ("http://kfp.internal", "metadata", False),
        ("http://kfp.internal", "none", True),
    ],
)
def test_tokens_only_travel_over_https_or_to_this_machine(host: str, auth: str, accepted: bool):
    env = {
        "RELAY_RESULTS_URI": "r",
        "RELAY_BACKEND": "kfp",
        "RELAY_KFP_HOST": host,
        "RELAY_AUTH": auth,
        "RELAY_STATIC_TOKEN": "t",
    }
    if accepted:
        assert Settings.from_env(env).kfp_host == host
    else:
        with pytest.raises(ConfigError, match=r"RELAY_KFP_HOST: expected https:// \(plain http only to this machine"):
            Settings.from_env(env)


def test_a_claim_lease_must_be_shorter_than_the_event_age_limit():
    with pytest.raises(ConfigError, match="RELAY_CLAIM_LEASE: expected less than RELAY_MAX_EVENT_AGE"):
        Settings.from_env({"RELAY_RESULTS_URI": "r", "RELAY_MAX_EVENT_AGE": "5m", "RELAY_CLAIM_LEASE": "10m"})


@pytest.mark.parametrize("raw", ["0", "-3", "ten", "2.5"])
def test_the_reconcile_budget_is_a_whole_number_of_runs(raw: str):
    assert Settings.from_env({"RELAY_RESULTS_URI": "r"}).reconcile_per_tick == 50
    assert Settings.from_env({"RELAY_RESULTS_URI": "r", "RELAY_RECONCILE_PER_TICK": "200"}).reconcile_per_tick == 200
    with pytest.raises(
        ConfigError, match=f"RELAY_RECONCILE_PER_TICK: expected a whole number, 1 or more, found '{raw}'"
    ):
        Settings.from_env({"RELAY_RESULTS_URI": "r", "RELAY_RECONCILE_PER_TICK": raw})
