"""Private attributes of third-party clients that Relay reads or sets, pinned on the installed versions.

Each use has no public equivalent in the library (the reason is at the use). An upgrade that renames or changes
one would otherwise break the step silently (a request to the wrong host, a token instead of the configured
identity, a pool that no longer checks addresses); here it fails, naming the library, its version and the use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter

from tests.servers.kfp import KfpApiServer


def broken(distribution: str, use: str, where: str) -> str:
    return f"{distribution} {version(distribution)} no longer supports {use}, which {where} relies on"


class _Recorder(BaseAdapter):
    """Answers every request with `{}` and keeps it: what the client would have sent, no socket opened."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        answer = requests.Response()
        answer.status_code, answer._content, answer.url = 200, b"{}", request.url or ""
        answer.headers["Content-Type"] = "application/json"
        answer.request = request
        return answer

    def close(self) -> None:
        pass


def test_kagglesdk_http_client_takes_the_endpoint_session_and_auth_relay_sets(monkeypatch: pytest.MonkeyPatch):
    from kagglesdk import KaggleClient, KaggleEnv
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

    where = "pipelines/steps/destinations/kaggle.py KaggleDataset._client"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "a-token-from-the-environment")  # must not win over the set auth
    recorder = _Recorder()
    with KaggleClient(env=KaggleEnv.PROD, username="someone", password="the-key") as client:
        http = client.http_client()
        assert isinstance(getattr(http, "_endpoint", None), str), broken("kagglesdk", "`_endpoint`", where)
        session = getattr(http, "_session", None)
        assert isinstance(session, requests.Session), broken("kagglesdk", "`_session` (requests.Session)", where)
        http._endpoint = "https://kaggle.example.test"
        session.auth = ("someone", "the-key")
        session.mount("https://", recorder)
        request = ApiGetDatasetStatusRequest()
        request.owner_slug, request.dataset_slug = "someone", "plates"
        client.datasets.dataset_api_client.get_dataset_status(request)
    assert len(recorder.sent) == 1, broken("kagglesdk", "calls through `_session`", where)
    sent = recorder.sent[0]
    url = sent.url or ""
    assert url.startswith("https://kaggle.example.test/v1/"), broken("kagglesdk", f"`_endpoint` (sent to {url})", where)
    basic = requests.Request("POST", url, auth=("someone", "the-key")).prepare().headers["Authorization"]
    assert sent.headers.get("Authorization") == basic, broken("kagglesdk", "`_session.auth` as the identity", where)


@pytest.fixture
def kfp_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KfpApiServer]:
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with KfpApiServer() as api:
        yield api


def test_kfp_client_apis_share_one_api_client_whose_pool_manager_is_replaceable(kfp_server: KfpApiServer):
    import kfp

    where = "pipelines/steps/ratchet/clusters/kfp.py _pin"
    client = kfp.Client(host=kfp_server.url, existing_token="a-token")
    healthz = getattr(client, "_healthz_api", None)
    shared = getattr(healthz, "api_client", None)
    assert shared is not None, broken("kfp", "`Client._healthz_api.api_client`", where)
    # Replacing the one pool manager covers every call only while all of the client's APIs share that ApiClient.
    apis: Mapping[str, Any] = {
        name: value for name, value in vars(client).items() if name.endswith("_api") and hasattr(value, "api_client")
    }
    assert {"_run_api", "_pipelines_api", "_upload_api", "_experiment_api"} <= set(apis), broken(
        "kfp", f"the API objects Relay calls (found {sorted(apis)})", where
    )
    assert all(api.api_client is shared for api in apis.values()), broken("kfp", "one shared ApiClient", where)
    rest = shared.rest_client
    assert isinstance(rest.pool_manager, urllib3.PoolManager), broken("kfp", "`rest_client.pool_manager`", where)
    assert isinstance(rest.pool_manager.connection_pool_kw, dict), broken("kfp", "`connection_pool_kw`", where)
    # The replaced pool manager is the one a request goes through: one read from the attribute at each call.
    recorder_calls: list[str] = []

    class _Refusing(urllib3.PoolManager):
        def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
            recorder_calls.append(url)
            raise urllib3.exceptions.NewConnectionError(None, "refused by the test")  # type: ignore[arg-type]

    rest.pool_manager = _Refusing()
    before = len(kfp_server.requests)
    with pytest.raises(urllib3.exceptions.HTTPError):
        healthz.healthz_service_get_healthz()
    assert recorder_calls and len(kfp_server.requests) == before, broken("kfp", "the replaced `pool_manager`", where)


def test_google_cloud_storage_client_http_is_its_authorized_session():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    where = "pipelines/steps/objects.py GcsObjects.open"
    client = storage.Client(project="relay-test", credentials=AnonymousCredentials())
    session = getattr(client, "_http", None)
    # google-cloud-core's Client._http: the session the client authorizes (and refreshes the token of) itself.
    assert isinstance(session, requests.Session), broken("google-cloud-core", "`Client._http`", where)
    assert client._http is session, broken("google-cloud-core", "one `Client._http` session", where)
    assert isinstance(client.api_endpoint, str), broken("google-cloud-storage", "`Client.api_endpoint`", where)
    path = client.bucket("plates").blob("a b.json").path
    assert path == "/b/plates/o/a%20b.json", broken("google-cloud-storage", f"`Blob.path` (found {path})", where)


def test_google_cloud_storage_blob_properties_are_the_object_resource():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    where = "devstack/stack.py and devstack/demo.py (a notification's object resource)"
    client = storage.Client(project="relay-test", credentials=AnonymousCredentials())
    blob = client.bucket("plates").blob("result.json")
    properties = getattr(blob, "_properties", None)
    assert isinstance(properties, dict), broken("google-cloud-storage", "`Blob._properties` (a dict)", where)
    properties.update({"generation": "7", "size": "12", "bucket": "plates"})
    assert (blob.generation, blob.size) == (7, 12), broken(
        "google-cloud-storage", "`_properties` as the resource", where
    )
