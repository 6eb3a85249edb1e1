"""A pipeline job's log lines from Cloud Logging (entries.list), with the caller's own credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from relay.adapters.http import HttpClient, NoAnswerError, Response, error_detail
from relay.adapters.tokens import StaticTokenSource, bearer, call_with_token, default_token_source
from relay.config import setting
from relay.errors import RelayError, UnauthorizedError
from relay.ports import TokenSource
from relay.urls import credentials_refusal, safe_for_credentials
from relaycli.errors import UsageError

PUBLIC_ENDPOINT = "https://logging.googleapis.com"
PAGE_SIZE = 1000  # entries.list's own maximum: a page at a time, never the whole log


class LinesUnavailableError(Exception):
    """Why no lines could be read (no credentials, refused, no answer): the links printed already still hold."""


def endpoint(env: Mapping[str, str]) -> str:
    """RELAY_LOGGING_ENDPOINT (a private endpoint, a test's server), else Cloud Logging's own."""
    url = setting(env, "LOGGING_ENDPOINT").rstrip("/") or PUBLIC_ENDPOINT
    if not safe_for_credentials(url):
        raise UsageError(credentials_refusal("RELAY_LOGGING_ENDPOINT", repr(url)))
    return url


def tokens(env: Mapping[str, str], http: HttpClient) -> TokenSource:
    """The caller's credentials, as the relay command uses them: RELAY_AUTH=static's token, else Application
    Default Credentials (gcloud auth application-default login, a key file)."""
    if setting(env, "AUTH") == "static":
        return StaticTokenSource(setting(env, "STATIC_TOKEN"))
    return default_token_source(http)


def entries(
    http: HttpClient, url: str, source: TokenSource, project: str, query: str, *, newest_first: bool = False
) -> Iterator[dict[str, Any]]:
    """The entries `query` selects in `project`, oldest first (or newest first), a page per request."""
    body: dict[str, Any] = {
        "resourceNames": [f"projects/{project}"],
        "filter": query,
        "orderBy": "timestamp desc" if newest_first else "timestamp asc",
        "pageSize": PAGE_SIZE,
    }
    where = f"{url}/v2/entries:list"
    while True:
        page = _page(http, source, where, body)
        yield from (entry for entry in page.get("entries") or [] if isinstance(entry, dict))
        token = page.get("nextPageToken")
        if not token:
            return
        body = {**body, "pageToken": token}


def _page(http: HttpClient, source: TokenSource, where: str, body: Mapping[str, Any]) -> dict[str, Any]:
    def send(token: str) -> Response:
        # A read: safe to send again on a stale connection.
        answer = http.request("POST", where, json=body, headers=bearer(token), repeatable=True)
        if answer.status == 401:
            raise UnauthorizedError(f"{where}: 401 {error_detail(answer)}")
        return answer

    try:
        answer = call_with_token(source, send)
    except (RelayError, NoAnswerError) as error:
        raise LinesUnavailableError(f"{where}: {error}") from None
    if not answer.ok:
        raise LinesUnavailableError(f"{where}: Cloud Logging answered {answer.status}: {error_detail(answer)}")
    page = answer.json()
    if not isinstance(page, dict):
        raise LinesUnavailableError(f"{where}: expected a JSON object, found {type(page).__name__}")
    return page


def line(entry: Mapping[str, Any]) -> str:
    """`timestamp severity text`: the text payload, a JSON payload's message (else the payload itself)."""
    payload = entry.get("textPayload")
    if payload is None:
        structured = entry.get("jsonPayload")
        if isinstance(structured, dict):
            payload = structured.get("message") or json.dumps(structured, sort_keys=True)
        else:
            payload = json.dumps(entry.get("protoPayload") or {}, sort_keys=True)
    return f"{entry.get('timestamp', '-')} {entry.get('severity', 'DEFAULT')} {payload}"
