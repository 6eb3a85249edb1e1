from __future__ import annotations

from pathlib import Path

import pytest

from relay.secrets import (
    LocalSecrets,
    Redactor,
    SecretManagerSecrets,
    SecretNotFoundError,
    references,
    resolve_all,
    well_formed,
)
from tests.servers.secret_manager import SecretManagerServer


def test_local_secrets_come_from_the_environment_then_a_folder(tmp_path: Path):
    (tmp_path / "hf-token").write_text("from-file\n")
    secrets = LocalSecrets(env={"RELAY_SECRET_KAGGLE_KEY": "from-env"}, folder=tmp_path)
    assert secrets.resolve("secret://kaggle-key") == "from-env"
    assert secrets.resolve("secret://hf-token") == "from-file"
    assert secrets.resolve("secret://projects/p/secrets/hf-token/versions/3") == "from-file"
    with pytest.raises(SecretNotFoundError, match=r"secret://nope: no such secret \(looked in RELAY_SECRET_NOPE or"):
        secrets.resolve("secret://nope")


def test_resolve_all_replaces_references_anywhere_and_reports_the_values():
    value = {"kind": "s3", "keys": ["secret://a", {"deep": "secret://b"}], "plain": "x"}
    resolved, values = resolve_all(value, LocalSecrets(env={"RELAY_SECRET_A": "1", "RELAY_SECRET_B": "2"}))
    assert resolved == {"kind": "s3", "keys": ["1", {"deep": "2"}], "plain": "x"}
    assert sorted(values) == ["1", "2"] and sorted(references(value)) == ["secret://a", "secret://b"]


def test_redaction_replaces_longer_secrets_first():
    redact = Redactor(["abc", "abcdef"])
    assert redact("token abcdef and abc") == "token [redacted] and [redacted]"


@pytest.mark.parametrize(
    ("reference", "ok"),
    [("secret://kaggle-key", True), ("secret://projects/p/secrets/s/versions/latest", True), ("secret://a b", False)],
)
def test_well_formed(reference: str, ok: bool):
    assert well_formed(reference) is ok


def test_secret_manager_references_resolve_through_the_real_client():
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import secretmanager

    with SecretManagerServer({"projects/lab/secrets/kaggle-key": "k-value"}) as server:
        client = secretmanager.SecretManagerServiceClient(
            credentials=AnonymousCredentials(), transport="rest", client_options=ClientOptions(api_endpoint=server.url)
        )
        secrets = SecretManagerSecrets("lab", client=client)
        assert secrets.resolve("secret://kaggle-key") == "k-value"
        assert secrets.resolve("secret://projects/lab/secrets/kaggle-key/versions/1") == "k-value"
        with pytest.raises(SecretNotFoundError, match=r"secret://hf-token: Secret Manager answered NotFound"):
            secrets.resolve("secret://hf-token")
        assert [r.path for r in server.requests] == [
            "/v1/projects/lab/secrets/kaggle-key/versions/latest:access",
            "/v1/projects/lab/secrets/kaggle-key/versions/1:access",
            "/v1/projects/lab/secrets/hf-token/versions/latest:access",
        ]
