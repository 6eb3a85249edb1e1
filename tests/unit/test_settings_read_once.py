"""RELAY_* settings read once (relay.config.setting): the function and the CLI take a set-but-empty one alike."""

from __future__ import annotations

from relay.config import DEFAULT_CATALOG, Settings
from relaycli.config import CliConfig

BASE = {"RELAY_RESULTS_URI": "gs://records/runs", "RELAY_BACKEND": "local"}


def test_an_empty_local_root_or_catalog_means_the_default_to_the_function_as_to_the_cli():
    # The function kept "" (records under the working folder, the catalog at ""), the CLI the defaults: the CLI then
    # read records and specs from elsewhere than the function wrote and read them.
    env = {**BASE, "RELAY_LOCAL_ROOT": "", "RELAY_CATALOG_URI": " ", "RELAY_KFP_EXPERIMENT": ""}
    settings = Settings.from_env(env)
    cli = CliConfig.from_env(env)
    assert (settings.local_root, settings.catalog_uri) == (cli.local_root, cli.catalog_uri)
    assert (settings.local_root, settings.catalog_uri) == (Settings.local_root, str(DEFAULT_CATALOG))
    assert settings.kfp_experiment == Settings.kfp_experiment


def test_an_empty_backend_or_auth_is_the_default_not_a_problem():
    settings = Settings.from_env({**BASE, "RELAY_BACKEND": "", "RELAY_AUTH": " "})
    assert (settings.backend, settings.auth) == ("local", "none") == (CliConfig.from_env(BASE).backend, "none")
