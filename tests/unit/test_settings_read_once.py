"""RELAY_* settings read once (relay.config.setting): the function and the CLI take a set-but-empty one alike."""

from __future__ import annotations

from pipelines.steps.gate import gate_from_env
from pipelines.steps.launch import LaunchRecords, launch_records
from relay.config import DEFAULT_CATALOG, Settings
from relay.policy import NO_POLICY
from relay.secrets import LocalSecrets, resolver_from_env
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


def test_the_steps_and_the_secrets_take_a_set_but_empty_setting_as_unset_too(tmp_path):
    # The steps read os.environ themselves: " " was a policy URI to read and a results location to verify runs in.
    env = {"RELAY_POLICY_URI": " ", "RELAY_RESULTS_URI": " ", "RELAY_BACKEND": " local ", "RELAY_SECRETS": " "}
    gate = gate_from_env(env)
    assert gate.policy is NO_POLICY and gate.scope.local and gate.launches == LaunchRecords()
    assert launch_records({"RELAY_RESULTS_URI": f" {tmp_path} "}).results_uri == str(tmp_path)
    assert resolver_from_env(env) == LocalSecrets(env=env, folder=None)
    folder = resolver_from_env({"RELAY_SECRETS": " local", "RELAY_SECRETS_DIR": f"{tmp_path} "})
    assert isinstance(folder, LocalSecrets) and folder.folder == tmp_path
