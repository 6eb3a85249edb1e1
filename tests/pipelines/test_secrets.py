from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from relay.secrets import (
    MIN_SCRUBBED,
    LocalSecrets,
    Redactor,
    SecretManagerSecrets,
    SecretNotFoundError,
    references,
    resolve_all,
    scrub_logs,
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


# --- what a careless server hands back: every form of a value is scrubbed ----------------------------------

TOKEN = "lims/7f3a+9c2e.51d84b6a="


@pytest.mark.parametrize(
    "echoed",
    [
        TOKEN,
        quote(TOKEN, safe=""),
        quote(TOKEN, safe="").lower(),  # %2f as some encoders write it
        quote(quote(TOKEN, safe=""), safe=""),  # encoded twice
        quote_plus(TOKEN).replace("%2B", "+"),  # a + a form decoder would read as a space, and back
        base64.b64encode(TOKEN.encode()).decode(),
        base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip("="),
        base64.b64encode(f"svc:{TOKEN}".encode()).decode(),  # inside a longer encoded value, at another alignment
        base64.b64encode(f"lab-bot:{TOKEN}".encode()).decode(),
        TOKEN.encode().hex(),
        json.dumps(TOKEN).replace("/", "\\/"),
        json.dumps(json.dumps({"auth": TOKEN.replace("/", "\\/")})),  # JSON text inside JSON inside JSON
        "".join(f"\\u{ord(c):04x}" for c in TOKEN),
        html.escape(TOKEN).replace("/", "&#x2F;"),
        repr(TOKEN.encode()),
        TOKEN.upper(),
        f"{TOKEN[:9]}%2B{TOKEN[10:]}",  # one character encoded, the rest not
    ],
)
def test_a_token_is_scrubbed_in_every_form_a_server_may_echo(echoed: str):
    redact = Redactor([f"Bearer {TOKEN}"])  # the value bound to the header: the token travels without its prefix
    text = redact(f"answered: {echoed} (sent)")
    assert text.startswith("answered: ") and text.endswith(" (sent)") and "[redacted]" in text
    for part in (TOKEN[:8], TOKEN[-8:], "7f3a", "51d84b6a"):
        assert part not in text and part.upper() not in text, text


def test_basic_credentials_and_json_keys_are_scrubbed_by_their_parts():
    pair = base64.b64encode(b"lab-bot:k3y-0123456789abcdef").decode()
    key_file = json.dumps({"type": "service_account", "private_key_id": "a1b2c3d4e5f6a7b8c9d0"})
    redact = Redactor([f"Basic {pair}", key_file])
    assert redact("key k3y-0123456789abcdef, id a1b2c3d4e5f6a7b8c9d0") == "key [redacted], id [redacted]"
    assert redact(pair) == "[redacted]"


def test_overlapping_forms_of_two_secrets_leave_no_part_of_either():
    redact = Redactor(["abcdefgh12345678", "zzzzabcdef"])
    assert redact("<zzzzabcdefgh12345678>") == "<[redacted]>"


def test_a_short_secret_is_scrubbed_where_it_stands_alone_and_nowhere_else():
    # Below MIN_SCRUBBED characters a value would match inside words and numbers: it is scrubbed only standing alone.
    assert MIN_SCRUBBED == 6
    redact = Redactor(["k9x"])
    assert redact("key k9x, %6B9x, and k9xy or 1k9x") == "key [redacted], [redacted], and k9xy or 1k9x"


def test_log_records_are_scrubbed_as_they_are_made_whatever_handler_writes_them():
    redact = Redactor([f"Bearer {TOKEN}"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.secrets.scrubbed")
    logger.addHandler(handler)
    previous = logging.getLogRecordFactory()
    try:
        scrub_logs(redact)
        logger.warning("redirected to %s", f"/login?t={quote(TOKEN, safe='')}")
        try:
            raise ConnectionError(f"refused {base64.b64encode(TOKEN.encode()).decode()}")
        except ConnectionError:
            logger.exception("failed")
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "redirected to /login?t=[redacted]" in written and "ConnectionError: refused [redacted]" in written
    assert "7f3a" not in written and "Traceback" in written
