"""The loopback servers accept what the real clients send and reject what the real services reject."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization

from tests.servers.base import LoopbackServer, Request, Response
from tests.servers.kfp import KfpApiServer
from tests.servers.metadata import MetadataServer
from tests.servers.oauth import OAuthTokenServer, ServiceAccountKey, make_service_account_key
from tests.servers.tokens import Jwt, encode_jwt
from tests.servers.vertex import BILLING_LABEL, VertexServer

AUDIENCE = "https://kfp.relay.example"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
FLAVOR = {"Metadata-Flavor": "Google"}
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
REPO = Path(__file__).resolve().parents[2]


class EchoServer(LoopbackServer):
    def handle(self, request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response.json(200, {"path": request.path, "json": request.json})


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=5, **kwargs)


def post(url: str, **kwargs: Any) -> requests.Response:
    return requests.post(url, timeout=5, **kwargs)


def run_python(script: str, env: dict[str, str], tmp_path: Path) -> Any:
    """Run `script` in a fresh interpreter (google-auth fixes its metadata host at import) and parse its stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
    # A private HOME and gcloud config: no developer ADC or gcloud project may leak into the check.
    base |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- base ---------------------------------------------------------------------------------------------


def test_base_binds_loopback_records_requests_and_closes_on_exit():
    with EchoServer() as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.host_port == f"127.0.0.1:{server.port}"
        answer = post(f"{server.url}/x?a=1&b=", json={"k": "v"}, headers={"X-Test": "yes"})
        assert answer.json() == {"path": "/x", "json": {"k": "v"}}
        (seen,) = server.requests
        assert (seen.method, seen.path, seen.json) == ("POST", "/x", {"k": "v"})
        assert seen.query == {"a": ["1"], "b": [""]}
        assert seen.header("x-test") == "yes"
        port, thread = server.port, server._thread
    assert thread is not None and not thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_fail_next_answers_matching_requests_then_recovers():
    with EchoServer() as server:
        server.fail_next(2, 429, body={"error": "slow down"}, headers={"Retry-After": "3"}, path_prefix="/api")
        assert get(f"{server.url}/other").status_code == 200
        first = get(f"{server.url}/api/a")
        assert (first.status_code, first.headers["Retry-After"], first.json()) == (429, "3", {"error": "slow down"})
        assert get(f"{server.url}/api/b").status_code == 429
        assert get(f"{server.url}/api/c").status_code == 200
        assert [r.faulted for r in server.requests] == [False, True, True, False]
        server.fail_next(1, 503)
        default = get(f"{server.url}/api/d")
        assert default.status_code == 503 and default.json()["error"]["code"] == 503


def test_handler_exception_is_a_500_and_is_kept_for_the_test():
    with EchoServer() as server:
        assert get(f"{server.url}/boom").status_code == 500
        assert "handler bug" in server.errors[0]


# --- metadata -----------------------------------------------------------------------------------------


def test_metadata_requires_flavor_header_and_always_answers_with_it():
    with MetadataServer() as md:
        refused = get(f"{md.url}{TOKEN_PATH}")
        assert refused.status_code == 403 and refused.headers["Metadata-Flavor"] == "Google"
        probe = get(f"{md.url}/", headers=FLAVOR)
        assert probe.status_code == 200 and probe.headers["Metadata-Flavor"] == "Google"
        project = get(f"{md.url}/computeMetadata/v1/project/project-id", headers=FLAVOR)
        assert project.text == "relay-test"
        proxied = get(f"{md.url}/", headers={**FLAVOR, "X-Forwarded-For": "1.2.3.4"})
        assert proxied.status_code == 403
        unknown = get(f"{md.url}/computeMetadata/v1/instance/service-accounts/x@y/token", headers=FLAVOR)
        assert unknown.status_code == 404 and md.token_fetches == 0


def test_metadata_tokens_are_new_each_fetch_and_expire_or_are_revoked():
    now = [1_000_000.0]
    with MetadataServer(token_lifetime=120, clock=lambda: now[0]) as md:

        def fetch() -> dict[str, Any]:
            url = f"{md.url}{TOKEN_PATH}?scopes={CLOUD_PLATFORM}"
            return dict(get(url, headers=FLAVOR).json())

        first, second = fetch(), fetch()
        assert first == {"access_token": "access-1", "expires_in": 120, "token_type": "Bearer"}
        assert second["access_token"] == "access-2" and md.token_fetches == 2
        assert md.is_valid("access-1") and md.valid_tokens() == ["access-1", "access-2"]
        assert not md.is_valid("access-1", audience=AUDIENCE)  # an access token is not an ID token
        assert not md.is_valid("forged")
        now[0] += 120
        assert not md.is_valid("access-2")
        third = fetch()["access_token"]
        md.revoke_all()
        assert not md.is_valid(third) and md.valid_tokens() == []


def test_metadata_identity_token_is_a_signed_jwt():
    with MetadataServer(id_token_lifetime=600) as md:
        url = f"{md.url}/computeMetadata/v1/instance/service-accounts/default/identity"
        assert get(url, headers=FLAVOR).status_code == 400  # audience is required
        tokens = [get(url, params={"audience": AUDIENCE, "format": "full"}, headers=FLAVOR).text for _ in "ab"]
        assert tokens[0] != tokens[1] and md.id_token_fetches == 2 and md.token_fetches == 0
        jwt = Jwt.parse(tokens[0])
        assert jwt.verifies_with(_public_key(md.public_certs))
        claims = jwt.payload
        assert (claims["aud"], claims["iss"], claims["email"]) == (AUDIENCE, "https://accounts.google.com", md.email)
        assert claims["exp"] - claims["iat"] == 600 and claims["sub"].isdigit()
        assert md.is_valid(tokens[0], audience=AUDIENCE) and not md.is_valid(tokens[0], audience="other")


def test_metadata_server_works_with_real_google_auth(tmp_path):
    with MetadataServer() as md:
        md.fail_next(1, 503, path_prefix=TOKEN_PATH)  # google-auth retries a 503 from the metadata server
        result = run_python(
            f"""
            import json, os
            import google.auth, google.auth.jwt
            from google.auth import compute_engine
            from google.auth.transport.requests import Request
            from google.oauth2 import id_token

            request = Request()
            credentials, project = google.auth.default()
            credentials.refresh(request)
            first = credentials.token
            credentials.refresh(request)
            by_default = id_token.fetch_id_token_credentials({AUDIENCE!r}, request=request)
            by_default.refresh(request)
            explicit = compute_engine.IDTokenCredentials(
                request, target_audience={AUDIENCE!r}, use_metadata_identity_endpoint=True
            )
            explicit.refresh(request)
            claims = google.auth.jwt.decode(
                explicit.token, certs=json.loads(os.environ["CERTS"]), audience={AUDIENCE!r}
            )
            print(json.dumps({{
                "type": type(credentials).__name__, "project": project, "email": credentials.service_account_email,
                "tokens": [first, credentials.token], "id_tokens": [by_default.token, explicit.token],
                "id_email": claims["email"],
            }}))
            """,
            md.env() | {"CERTS": json.dumps(md.public_certs)},
            tmp_path,
        )
        assert result["type"] == "Credentials" and result["project"] == "relay-test"
        assert result["email"] == md.email == result["id_email"]
        assert result["tokens"] == ["access-1", "access-2"] and md.token_fetches == 2
        assert all(md.is_valid(t, audience=AUDIENCE) for t in result["id_tokens"]) and md.id_token_fetches == 2
        assert [r.faulted for r in md.requests_to(TOKEN_PATH)] == [True, False, False]
        assert all(r.header("Metadata-Flavor") == "Google" for r in md.requests)
        # The first refresh reads the account as "default", the second under its email; tokens stay "default".
        accounts = [r.path for r in md.requests_to("/computeMetadata/v1/instance/service-accounts/")]
        assert f"/computeMetadata/v1/instance/service-accounts/{md.email}/" in accounts


# --- oauth --------------------------------------------------------------------------------------------


def _public_key(certs: dict[str, str]) -> Any:
    (pem,) = certs.values()
    return serialization.load_pem_public_key(pem.encode())


def _assertion(key: ServiceAccountKey, **claims: Any) -> str:
    private = serialization.load_pem_private_key(key.info["private_key"].encode(), password=None)
    now = int(time.time())
    payload = {"iss": key.client_email, "aud": "https://oauth2.googleapis.com/token", "iat": now, "exp": now + 3600}
    return encode_jwt({**payload, **claims}, private, key.private_key_id)  # type: ignore[arg-type]


def _grant(server: OAuthTokenServer, assertion: str, grant_type: str | None = None) -> requests.Response:
    form = {"grant_type": grant_type or "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    return post(server.token_uri, data=form)


def test_oauth_server_works_with_real_google_auth_key_files(tmp_path):
    with OAuthTokenServer() as oauth:
        key_file = oauth.write_key_file(tmp_path / "key.json")
        stranger = make_service_account_key(oauth.token_uri).write(tmp_path / "untrusted.json")
        info = json.loads(key_file.read_text())
        assert info["type"] == "service_account" and info["token_uri"] == oauth.token_uri
        result = run_python(
            f"""
            import json
            from google.auth import exceptions
            from google.auth.transport.requests import Request
            from google.oauth2 import id_token, service_account

            request = Request()
            credentials = service_account.Credentials.from_service_account_file(
                {str(key_file)!r}, scopes=[{CLOUD_PLATFORM!r}]
            )
            credentials.refresh(request)
            first = credentials.token
            credentials.refresh(request)
            explicit = service_account.IDTokenCredentials.from_service_account_file(
                {str(key_file)!r}, target_audience={AUDIENCE!r}
            )
            explicit.refresh(request)
            fetched = id_token.fetch_id_token(request, {AUDIENCE!r})  # via GOOGLE_APPLICATION_CREDENTIALS
            try:
                service_account.Credentials.from_service_account_file(
                    {str(stranger)!r}, scopes=[{CLOUD_PLATFORM!r}]
                ).refresh(request)
                refused = None
            except exceptions.RefreshError as exc:
                refused = str(exc)
            print(json.dumps({{"tokens": [first, credentials.token], "id_tokens": [explicit.token, fetched],
                               "refused": refused}}))
            """,
            {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)},
            tmp_path,
        )
        assert result["tokens"] == ["sa-access-1", "sa-access-2"] and oauth.token_fetches == 2
        assert all(oauth.is_valid(t, audience=AUDIENCE) for t in result["id_tokens"])
        assert oauth.id_token_fetches == 2
        assert "invalid_grant" in result["refused"] and "Invalid JWT Signature" in result["refused"]
        assert all(r.header("Content-Type") == "application/x-www-form-urlencoded" for r in oauth.requests)


def test_oauth_server_rejects_bad_assertions():
    with OAuthTokenServer() as oauth:
        key = oauth.create_key()
        ok = _grant(oauth, _assertion(key, scope=CLOUD_PLATFORM))
        assert ok.status_code == 200 and oauth.is_valid(ok.json()["access_token"])
        now = int(time.time())
        refusals = {
            "unsupported_grant_type": _grant(oauth, _assertion(key, scope="s"), grant_type="client_credentials"),
            "invalid_scope": _grant(oauth, _assertion(key)),
            "wrong_aud": _grant(oauth, _assertion(key, scope="s", aud="https://elsewhere/token")),
            "expired": _grant(oauth, _assertion(key, scope="s", iat=now - 7200, exp=now - 3600)),
            "too_long": _grant(oauth, _assertion(key, scope="s", exp=now + 7200)),
            "not_a_jwt": _grant(oauth, "abc"),
            "untrusted_key": _grant(oauth, _assertion(make_service_account_key(oauth.token_uri), scope="s")),
        }
        assert {name: r.status_code for name, r in refusals.items()} == dict.fromkeys(refusals, 400)
        errors = {name: r.json()["error"] for name, r in refusals.items()}
        assert errors["unsupported_grant_type"] == "unsupported_grant_type"
        assert errors["invalid_scope"] == "invalid_scope"
        assert {errors[n] for n in ("wrong_aud", "expired", "too_long", "not_a_jwt", "untrusted_key")} == {
            "invalid_grant"
        }
        # The key file's own token_uri is an acceptable audience too.
        assert _grant(oauth, _assertion(key, scope="s", aud=oauth.token_uri)).status_code == 200
        oauth.delete_key(key)
        assert _grant(oauth, _assertion(key, scope="s")).json()["error"] == "invalid_grant"
        assert oauth.token_fetches == 2


# --- kfp ----------------------------------------------------------------------------------------------


# Written out and imported from a file: kfp reads a component's source with inspect.getsource, and it
# mistakes the string annotations of `from __future__ import annotations` (this module) for artifact types.
PIPELINE_SOURCE = """
from kfp import compiler, dsl

# base_image is explicit: kfp 2.17 warns (an error under filterwarnings=error) when it is defaulted.
@dsl.component(install_kfp_package=False, base_image="python:3.11")
def echo(text: str, count: int, ratio: float, flag: bool, items: list, options: dict, note: str = "none") -> str:
    return text

@dsl.pipeline(name="relay-tiny")
def tiny(text: str, count: int, ratio: float, flag: bool, items: list, options: dict, note: str = "none"):
    echo(text=text, count=count, ratio=ratio, flag=flag, items=items, options=options, note=note)
"""


def _compile_pipeline(directory: Path) -> Path:
    source = directory / "tiny_pipeline.py"
    source.write_text(PIPELINE_SOURCE)
    spec = importlib.util.spec_from_file_location("tiny_pipeline", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from kfp import compiler

    output = directory / "tiny.yaml"
    compiler.Compiler().compile(module.tiny, str(output))
    return output


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    return _compile_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def pipeline_spec(pipeline_file) -> dict[str, Any]:
    return dict(yaml.safe_load(pipeline_file.read_text()))


PARAMS = {"text": "hi", "count": 3, "ratio": 0.5, "flag": True, "items": [1, 2], "options": {"k": "v"}}


@pytest.fixture
def kfp_client_factory(tmp_path, monkeypatch):
    # kfp.Client reads ~/.config/kfp/context.json: give it an empty HOME.
    monkeypatch.setenv("HOME", str(tmp_path))
    import kfp

    return lambda server, token="t": kfp.Client(host=server.url, existing_token=token)


def test_kfp_server_serves_the_real_kfp_client(pipeline_file, kfp_client_factory):
    with KfpApiServer() as server:
        client = kfp_client_factory(server)
        experiment = client.create_experiment("relay")
        assert client.get_experiment(experiment_id=experiment.experiment_id).display_name == "relay"
        assert client.create_experiment("relay").experiment_id == experiment.experiment_id  # found, not re-created
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name="relay-run-abc",
            pipeline_package_path=str(pipeline_file),
            params=PARAMS,
        )
        assert run.state == "PENDING" and run.run_id and run.created_at is not None
        client.run_pipeline(experiment.experiment_id, "other", str(pipeline_file), params=PARAMS)
        name_filter = {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": "relay-run-abc"}]}
        listed = client.list_runs(experiment_id=experiment.experiment_id, filter=json.dumps(name_filter))
        assert [r.run_id for r in listed.runs] == [run.run_id] and listed.total_size == 1
        nothing = client.list_runs(
            experiment_id=experiment.experiment_id,
            filter=json.dumps(
                {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": "missing"}]}
            ),
        )
        assert not nothing.runs
        server.set_run_state(run.run_id, "SUCCEEDED")
        fetched = client.get_run(run.run_id)
        assert fetched.state == "SUCCEEDED" and fetched.finished_at is not None
        assert [s.state for s in fetched.state_history] == ["PENDING", "SUCCEEDED"]

        (stored, _) = server.runs
        body = stored["request_body"]
        assert set(body) == {"experiment_id", "display_name", "pipeline_spec", "runtime_config"}
        assert body["runtime_config"] == {"parameters": PARAMS}
        assert body["pipeline_spec"]["pipelineInfo"]["name"] == "relay-tiny"
        assert [e["display_name"] for e in server.experiments] == ["relay"]
        # What kfp.Client puts on the wire: a healthz probe, a numeric-operation camelCase filter, `namespace=`.
        first, lookup = server.requests[:2]
        assert (first.method, first.path) == ("GET", "/apis/v2beta1/healthz")
        assert lookup.query["namespace"] == [""]
        assert json.loads(lookup.query["filter"][0])["predicates"][0] == {
            "operation": 1,
            "key": "display_name",
            "stringValue": "relay",
        }
        assert all(r.header("Authorization") == "Bearer t" for r in server.requests)


def test_kfp_create_run_from_package_uses_experiment_name(pipeline_file, kfp_client_factory):
    with KfpApiServer() as server:
        client = kfp_client_factory(server)
        result = client.create_run_from_pipeline_package(
            str(pipeline_file), arguments=PARAMS, run_name="named", experiment_name="by-name"
        )
        (run,) = server.runs
        assert run["run_id"] == result.run_id and run["display_name"] == "named"
        assert [e["display_name"] for e in server.experiments] == ["by-name"]
        assert [(r.method, r.path) for r in server.requests[1:]] == [
            ("GET", "/apis/v2beta1/experiments"),
            ("POST", "/apis/v2beta1/experiments"),
            ("POST", "/apis/v2beta1/runs"),
        ]


def test_kfp_client_sees_400_for_an_undeclared_parameter(pipeline_file, kfp_client_factory):
    import kfp_server_api

    with KfpApiServer() as server:
        client = kfp_client_factory(server)
        experiment = client.create_experiment("relay")
        with pytest.raises(kfp_server_api.ApiException) as caught:
            client.run_pipeline(experiment.experiment_id, "r", str(pipeline_file), params={**PARAMS, "extra": 1})
        assert caught.value.status == 400 and "extra" in json.loads(caught.value.body)["message"]
        assert server.runs == []


def test_kfp_rejects_missing_bad_and_revoked_tokens(kfp_client_factory):
    import kfp_server_api

    with MetadataServer() as md, KfpApiServer(token_check=md.is_valid) as server:
        url = f"{server.url}/apis/v2beta1/healthz"
        missing = get(url)
        assert missing.status_code == 401 and missing.json()["code"] == 16 and missing.json()["message"]
        assert get(url, headers={"Authorization": "Bearer forged"}).status_code == 401
        token = get(f"{md.url}{TOKEN_PATH}", headers=FLAVOR).json()["access_token"]
        client = kfp_client_factory(server, token)
        assert client.list_experiments().experiments is None  # protojson omits an empty list
        md.revoke_all()  # the token expires server-side: the client's next call is refused
        with pytest.raises(kfp_server_api.ApiException) as caught:
            client.list_runs()
        assert caught.value.status == 401


def _post_run(server: KfpApiServer, body: Any, token: str = "t") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return post(f"{server.url}/apis/v2beta1/runs", json=body, headers=headers)


def _run_body(spec: dict[str, Any], name: str, **params: Any) -> dict[str, Any]:
    return {"display_name": name, "pipeline_spec": spec, "runtime_config": {"parameters": PARAMS | params}}


def _bad_runs(spec: dict[str, Any]) -> dict[str, tuple[int, Any]]:
    def body(**changes: Any) -> dict[str, Any]:
        good = _run_body(copy.deepcopy(spec), "r")
        return {k: v for k, v in (good | changes).items() if v is not None}

    broken_spec = copy.deepcopy(spec) | {"pipelineInfo": {"name": "x", "bogus": 1}}
    missing_count = {k: v for k, v in PARAMS.items() if k != "count"}
    return {
        "not_json_object": (400, [1, 2]),
        "no_display_name": (400, body(display_name=None)),
        "blank_display_name": (400, body(display_name="  ")),
        "no_spec_or_reference": (400, body(pipeline_spec=None)),
        "spec_and_reference": (400, body(pipeline_version_reference={"pipeline_id": "p"})),
        "unknown_top_level_field": (400, body(labels={"a": "b"})),
        "unknown_runtime_config_field": (400, body(runtime_config={"parameters": PARAMS, "params": {}})),
        "spec_fails_protobuf_parse": (400, body(pipeline_spec=broken_spec)),
        "spec_is_empty": (400, body(pipeline_spec={})),
        "undeclared_parameter": (400, body(runtime_config={"parameters": PARAMS | {"extra": 1}})),
        "missing_required_parameter": (400, body(runtime_config={"parameters": missing_count})),
        "int_parameter_as_string": (400, body(runtime_config={"parameters": PARAMS | {"count": "3"}})),
        "bool_parameter_as_int": (400, body(runtime_config={"parameters": PARAMS | {"flag": 1}})),
        "parameters_not_an_object": (400, body(runtime_config={"parameters": ["text", "hi"]})),
        "bad_state_enum": (400, body(state="DONE")),
        "unknown_experiment": (404, body(experiment_id="no-such-experiment")),
    }


def test_kfp_rejects_invalid_run_bodies(pipeline_spec):
    cases = _bad_runs(pipeline_spec)
    with KfpApiServer() as server:
        answers = {name: _post_run(server, body) for name, (_, body) in cases.items()}
        assert {n: a.status_code for n, a in answers.items()} == {n: want for n, (want, _) in cases.items()}
        assert all(set(a.json()) == {"error", "code", "message", "details"} for a in answers.values())
        assert "bogus" in answers["spec_fails_protobuf_parse"].json()["message"]
        assert server.runs == [] and server.errors == []
        # The optional parameter may be left out; a run without experiment_id lands in "Default".
        accepted = _post_run(server, _run_body(pipeline_spec, "r", ratio=1))
        assert accepted.status_code == 200, accepted.text
        assert [e["display_name"] for e in server.experiments] == ["Default"]


def test_kfp_list_filters_sort_and_pages(pipeline_spec):
    with KfpApiServer() as server:
        for name in ("b", "a", "c"):
            assert _post_run(server, _run_body(pipeline_spec, name)).status_code == 200

        def names(**params: str) -> tuple[int, Any]:
            answer = get(f"{server.url}/apis/v2beta1/runs", params=params, headers={"Authorization": "Bearer t"})
            body = answer.json()
            return answer.status_code, [r["display_name"] for r in body.get("runs", [])] or body

        assert names(sort_by="display_name desc") == (200, ["c", "b", "a"])
        first = get(
            f"{server.url}/apis/v2beta1/runs", params={"page_size": "2"}, headers={"Authorization": "Bearer t"}
        ).json()
        assert [r["display_name"] for r in first["runs"]] == ["b", "a"] and first["total_size"] == 3
        assert names(page_size="2", page_token=first["next_page_token"]) == (200, ["c"])
        substring = {"predicates": [{"key": "display_name", "operation": "IS_SUBSTRING", "stringValue": "a"}]}
        assert names(filter=json.dumps(substring)) == (200, ["a"])
        unknown_key = {"predicates": [{"key": "pipeline_root", "operation": "EQUALS", "string_value": "x"}]}
        assert names(filter=json.dumps(unknown_key))[0] == 400
        assert names(filter="{not json")[0] == 400
        assert names(sort_by="colour")[0] == 400
        missing = get(f"{server.url}/apis/v2beta1/runs/nope", headers={"Authorization": "Bearer t"})
        assert missing.status_code == 404 and missing.json()["code"] == 5


# --- vertex -------------------------------------------------------------------------------------------


def _job(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    job = {
        "displayName": "relay-run",
        "pipelineSpec": spec,
        "runtimeConfig": {"gcsOutputDirectory": "gs://relay-root/runs", "parameterValues": PARAMS},
        "serviceAccount": "pipelines@relay-test.iam.gserviceaccount.com",
        "labels": {"relay": "push", "event_id": "abc-123"},
    }
    return {k: v for k, v in (job | changes).items() if v is not None}


def _create_job(server: VertexServer, body: Any, job_id: str | None = "run-abc", token: str = "t") -> Any:
    params = {"pipelineJobId": job_id} if job_id is not None else {}
    return post(
        f"{server.url}/v1/{server.parent}/pipelineJobs",
        params=params,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_vertex_creates_gets_and_refuses_a_repeated_id(pipeline_spec):
    with VertexServer() as vertex:
        created = _create_job(vertex, _job(pipeline_spec))
        assert created.status_code == 200, created.text
        job = created.json()
        assert job["name"] == "projects/123456789012/locations/us-central1/pipelineJobs/run-abc"
        assert job["state"] == "PIPELINE_STATE_PENDING" and job["createTime"].endswith("Z")
        assert job["labels"].keys() == {"relay", "event_id", BILLING_LABEL}
        repeat = _create_job(vertex, _job(pipeline_spec))
        assert repeat.status_code == 409
        assert repeat.json() == {
            "error": {
                "code": 409,
                "message": "Pipeline job with the specified ID already exists",
                "status": "ALREADY_EXISTS",
            }
        }
        vertex.set_state("run-abc", "PIPELINE_STATE_SUCCEEDED")
        url = f"{vertex.url}/v1/{vertex.parent}/pipelineJobs"
        got = get(f"{url}/run-abc", headers={"Authorization": "Bearer t"}).json()
        assert got["state"] == "PIPELINE_STATE_SUCCEEDED" and "endTime" in got
        missing = get(f"{url}/run-zzz", headers={"Authorization": "Bearer t"})
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
        # Proto field names are accepted as well, as Google's JSON parsing does.
        snake = {
            "display_name": "s",
            "pipeline_spec": pipeline_spec,
            "runtime_config": {"gcs_output_directory": "gs://b/r", "parameter_values": PARAMS},
        }
        assert _create_job(vertex, snake, job_id="run-snake").status_code == 200
        # The longest id, 64 labels, international lower-case letters: all within what Vertex takes.
        widest = _job(pipeline_spec, labels={f"k{n}": "été" for n in range(63)} | {"équipe": ""})
        assert _create_job(vertex, widest, job_id="r" * 127).status_code == 200
        assert list(vertex.jobs) == ["run-abc", "run-snake", "r" * 127]


def test_vertex_rejects_what_vertex_rejects(pipeline_spec):
    long_key = "k" * 64
    cases: dict[str, tuple[int, Any, str | None]] = {
        "id_uppercase": (400, _job(pipeline_spec), "Run-abc"),
        "id_starts_with_digit": (400, _job(pipeline_spec), "1run"),
        "id_too_long": (400, _job(pipeline_spec), "r" * 128),  # "less than 128 characters"
        "unknown_field": (400, _job(pipeline_spec, color="red"), "ok-1"),
        "no_output_directory": (400, _job(pipeline_spec, runtimeConfig={"parameterValues": PARAMS}), "ok-2"),
        "invalid_spec": (400, _job({"pipelineInfo": {"name": "x"}, "root": {"bogus": {}}}), "ok-3"),
        "undeclared_parameter": (
            400,
            _job(
                pipeline_spec, runtimeConfig={"gcsOutputDirectory": "gs://b", "parameterValues": PARAMS | {"extra": 1}}
            ),
            "ok-4",
        ),
        "label_key_uppercase": (400, _job(pipeline_spec, labels={"Relay": "x"}), "ok-5"),
        "label_key_starts_with_digit": (400, _job(pipeline_spec, labels={"1relay": "x"}), "ok-6"),
        "label_key_too_long": (400, _job(pipeline_spec, labels={long_key: "x"}), "ok-7"),
        "label_value_uppercase": (400, _job(pipeline_spec, labels={"relay": "Push"}), "ok-8"),
        "label_value_dot": (400, _job(pipeline_spec, labels={"relay": "a.b"}), "ok-9"),
        "not_an_object": (400, ["x"], "ok-10"),
        "label_reserved": (400, _job(pipeline_spec, labels={BILLING_LABEL: "mine"}), "ok-11"),
        "labels_65": (400, _job(pipeline_spec, labels={f"k{n}": "" for n in range(65)}), "ok-12"),
        "label_key_capital_letter": (400, _job(pipeline_spec, labels={"équipe": "Étude"}), "ok-13"),
    }
    with VertexServer() as vertex:
        answers = {name: _create_job(vertex, body, job_id) for name, (_, body, job_id) in cases.items()}
        assert {n: a.status_code for n, a in answers.items()} == {n: want for n, (want, _, _) in cases.items()}
        assert all(a.json()["error"]["status"] == "INVALID_ARGUMENT" for a in answers.values())
        assert vertex.jobs == {} and vertex.errors == []
        unknown_param = post(
            f"{vertex.url}/v1/{vertex.parent}/pipelineJobs?jobId=x",
            json=_job(pipeline_spec),
            headers={"Authorization": "Bearer t"},
        )
        assert unknown_param.status_code == 400


def test_vertex_accepts_only_tokens_the_token_check_accepts(pipeline_spec):
    with MetadataServer() as md, VertexServer(token_check=md.is_valid) as vertex:
        assert _create_job(vertex, _job(pipeline_spec), token="forged").status_code == 401
        no_header = post(f"{vertex.url}/v1/{vertex.parent}/pipelineJobs", json=_job(pipeline_spec))
        assert no_header.status_code == 401 and no_header.json()["error"]["status"] == "UNAUTHENTICATED"
        token = get(f"{md.url}{TOKEN_PATH}", headers=FLAVOR).json()["access_token"]
        assert _create_job(vertex, _job(pipeline_spec), token=token).status_code == 200
        md.revoke_all()
        assert _create_job(vertex, _job(pipeline_spec), job_id="run-2", token=token).status_code == 401
        assert list(vertex.jobs) == ["run-abc"]
