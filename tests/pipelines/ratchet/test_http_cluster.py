"""The http destination against loopback servers: the Open Inference Protocol and the seed's algorithm API."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipelines.steps.egress import Egress, EgressError
from pipelines.steps.ratchet.clusters import ClusterConfigError, ClusterContext, ClusterError, ExportedFile
from pipelines.steps.ratchet.clusters.http import HttpCluster
from tests.servers.algorithmia import AlgorithmApiServer
from tests.servers.oip import OipServer, bytes_model

TOKEN = "oip-t0ken"


def context(tmp_path: Path) -> ClusterContext:
    """The servers listen on 127.0.0.1, which deployed pipelines refuse: a local run's egress allows it."""
    return ClusterContext(tmp_path, "w", egress=Egress.loopback())


def words(text: str) -> str:
    return json.dumps({"words": len(json.loads(text)["text"].split())})


@pytest.fixture
def oip() -> Iterator[OipServer]:
    with OipServer({"count": bytes_model(words)}, token_check=lambda token: token == TOKEN) as server:
        yield server
    assert server.errors == []


def oip_cluster(server: OipServer, tmp_path: Path, **options: Any) -> HttpCluster:
    config = {"kind": "http", "preset": "oip", "url": server.url, "token": TOKEN, **options}
    return HttpCluster.from_options(config, context(tmp_path))


def test_oip_deploy_loads_the_model_and_a_call_sends_one_bytes_tensor(oip: OipServer, tmp_path: Path):
    cluster = oip_cluster(oip, tmp_path)
    cluster.deploy("count", [ExportedFile("code", "model.py", b"ignored: the server loads from its repository")])
    assert oip.loaded == {"count"}
    result = cluster.call("count", {"text": "one two three"}, timeout=5)
    assert result.ok, result.error
    assert result.output == '{"words": 3}' and result.seconds > 0
    (infer,) = oip.requests_to("/v2/models/count/infer")
    assert infer.json == {
        "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ['{"text": "one two three"}']}]
    }
    assert infer.header("Authorization") == f"Bearer {TOKEN}"
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in oip.requests)


def test_oip_payload_that_is_an_inference_request_goes_as_is(tmp_path: Path):
    def add(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        a, b = inputs
        return [
            {
                "name": "sum",
                "shape": [2],
                "datatype": "FP32",
                "data": [x + y for x, y in zip(a["data"], b["data"], strict=True)],
            }
        ]

    with OipServer({"add": add}, token_check=None, preloaded=True) as server:
        cluster = HttpCluster.from_options({"kind": "http", "preset": "oip", "url": server.url}, context(tmp_path))
        tensors = [{"name": n, "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]} for n in ("a", "b")]
        result = cluster.call("add", {"inputs": tensors}, timeout=5)
        assert (result.ok, result.output) == (True, [2.0, 4.0])
        assert server.requests_to("/v2/models/add/infer")[0].header("Authorization") is None  # no credentials given


@pytest.mark.parametrize(
    ("setup", "fragment", "retryable"),
    [
        ("not-loaded", "HTTP 400 Bad Request", False),
        ("unknown", "HTTP 404 Not Found", False),
        ("wrong-token", "HTTP 401 Unauthorized", False),
        ("unavailable", "HTTP 503 Service Unavailable", True),
    ],
)
def test_oip_errors_are_recorded_as_their_status_line(
    oip: OipServer, tmp_path: Path, setup: str, fragment: str, retryable: bool
):
    """The server's message is its own text (an echoed token, an exception): records get the status only."""
    cluster = oip_cluster(oip, tmp_path, token="wrong" if setup == "wrong-token" else TOKEN)
    if setup == "unavailable":
        oip.fail_next(1, 503, path_prefix="/v2/models")
    name = "nope" if setup == "unknown" else "count"
    result = cluster.call(name, {"text": "x"}, timeout=5)
    assert not result.ok and result.error == fragment and result.retryable is retryable


def test_oip_deploy_of_a_model_the_repository_lacks_fails_with_its_message(oip: OipServer, tmp_path: Path):
    with pytest.raises(ClusterError, match=r"^nope: load: HTTP 404 Not Found$"):
        oip_cluster(oip, tmp_path).deploy("nope", [])
    data = [ExportedFile("data", "weights.bin", b"\0", "count", "data://.my/count/weights.bin")]
    with pytest.raises(ClusterError, match=r"1 data file\(s\) to copy, but the destination has no upload_path"):
        oip_cluster(oip, tmp_path).deploy("count", data)


def test_oip_call_past_its_timeout_fails_as_timed_out(tmp_path: Path):
    release = threading.Event()

    def slow(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        release.wait(10)  # released by the test once the client has given up
        return [{"name": "o", "shape": [1], "datatype": "BYTES", "data": ["late"]}]

    with OipServer({"slow": slow}, token_check=None, preloaded=True) as server:
        cluster = HttpCluster.from_options({"kind": "http", "preset": "oip", "url": server.url}, context(tmp_path))
        try:
            result = cluster.call("slow", "x", timeout=0.3)
        finally:
            release.set()
        assert not result.ok and result.timed_out and result.error == "timed out after 0.3 s"


def test_algorithmia_preset_calls_the_seeds_path_with_its_key_and_uploads_data(tmp_path: Path):
    def summarize(payload: Any) -> Any:
        if payload == "boom":
            raise RuntimeError("it broke")
        return {"got": payload}

    with AlgorithmApiServer("k3y", {"summarize": summarize}) as server:
        config = {"kind": "http", "preset": "algorithmia", "url": server.url, "api_key": "k3y", "owner": "qa"}
        cluster = HttpCluster.from_options(config, context(tmp_path))
        assert cluster.data_name("summarize", "report.txt") == "data://qa/summarize/report.txt"
        assert cluster.algo_name("tokenize", None) == "algo://qa/tokenize/latestPrivate"
        data = ExportedFile("data", "in/report.txt", b"text", "summarize", "data://qa/summarize/in/report.txt")
        cluster.deploy("summarize", [ExportedFile("code", "summarize.py", b"code stays home"), data])
        assert server.data == {"qa/summarize/in/report.txt": b"text"}
        result = cluster.call("summarize", {"document": "data://qa/summarize/in/report.txt"}, timeout=7.5)
        assert (result.ok, result.output) == (True, {"got": {"document": "data://qa/summarize/in/report.txt"}})
        (call,) = server.requests_to("/v1/algo/")
        assert call.path == "/v1/algo/qa/summarize/latestPrivate" and call.query == {"timeout": ["8"]}
        assert call.header("Authorization") == "Simple k3y"
        failed = cluster.call("summarize", "boom", timeout=5)
        assert (failed.ok, failed.error) == (False, "HTTP 400 Bad Request")  # not the algorithm's exception
        assert server.errors == []


def test_a_custom_call_path_and_code_upload(tmp_path: Path):
    with AlgorithmApiServer("k", {"echo": lambda payload: payload}) as server:
        config = {
            "kind": "http",
            "url": server.url,
            "api_key": "k",
            "call_path": "/v1/algo/team/{name}/2.0.1",
            "code_upload_path": "/v1/data/team/code-{name}/{path}",
            "version": "2.0.1",
        }
        cluster = HttpCluster.from_options(config, context(tmp_path))
        cluster.deploy("echo", [ExportedFile("code", "src/echo.py", b"def apply(x): return x")])
        assert server.data == {"team/code-echo/src/echo.py": b"def apply(x): return x"}
        assert cluster.call("echo", [1, 2], timeout=5).output == [1, 2]
        assert server.requests_to("/v1/algo/")[0].path == "/v1/algo/team/echo/2.0.1"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"url": "http://api.example.com", "preset": "oip", "token": "t"}, "expected https:// (plain http only"),
        ({"url": "ftp://x", "preset": "oip"}, "expected an http(s):// URL"),
        ({"url": "https://x"}, "call_path: expected a template"),
        ({"url": "https://x", "preset": "triton"}, "preset: expected one of oip, algorithmia"),
        ({"url": "https://x", "preset": "oip", "verify": False}, "found verify"),
        ({"url": "https://x", "preset": "oip", "ca_cert": "/no/such.pem"}, "no PEM file at /no/such.pem"),
        ({"url": "https://x", "preset": "oip", "protocol": "grpc"}, "protocol: expected json or oip"),
    ],
)
def test_bad_destinations_are_refused(tmp_path: Path, config: dict[str, Any], fragment: str):
    with pytest.raises(ClusterConfigError) as caught:
        HttpCluster.from_options({"kind": "http", **config}, context(tmp_path))
    assert fragment in str(caught.value)


# --- TLS: the CA certificate option, checked against a real handshake ------------------------------------


def _self_signed(tmp_path: Path) -> tuple[str, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_text(pem)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem, cert_path, key_path


@pytest.fixture
def tls_oip(tmp_path: Path) -> Iterator[tuple[OipServer, str]]:
    pem, cert_path, key_path = _self_signed(tmp_path)
    server = OipServer({"count": bytes_model(words)}, token_check=None, preloaded=True)
    with server:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        httpd = server._httpd
        assert httpd is not None
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)  # the same loopback server, over TLS
        yield server, pem


def test_a_ca_certificate_from_a_secret_or_a_file_verifies_the_server(tls_oip: tuple[OipServer, str], tmp_path: Path):
    server, pem = tls_oip
    url = server.url.replace("http://", "https://")
    payload = {"text": "a b"}
    for ca_cert in (pem, str(tmp_path / "server.pem")):  # a secret's PEM text, or a path to a PEM file
        config = {"kind": "http", "preset": "oip", "url": url, "token": TOKEN, "ca_cert": ca_cert}
        result = HttpCluster.from_options(config, context(tmp_path / "work")).call("count", payload, 5)
        assert (result.ok, result.output) == (True, '{"words": 2}'), result.error
    unverified = HttpCluster.from_options({"kind": "http", "preset": "oip", "url": url}, context(tmp_path))
    refused = unverified.call("count", payload, 5)
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.error


# --- egress: where the cluster may be reached ------------------------------------------------------------


def test_by_default_a_loopback_url_is_refused_before_any_request(oip: OipServer, tmp_path: Path):
    config = {"kind": "http", "preset": "oip", "url": oip.url, "token": TOKEN}
    with pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address") as refused:
        HttpCluster.from_options(config, ClusterContext(tmp_path, "w"))  # a deployed pipeline's default
    assert refused.value.status == 403
    # Built without that first check, every connection is refused all the same.
    cluster = HttpCluster(oip.url, call_path="/v2/models/{name}/infer", load_path="/v2/repository/models/{name}/load")
    with pytest.raises(ClusterError, match=r"count: load: 127\.0\.0\.1 is a loopback address"):
        cluster.deploy("count", [])
    result = cluster.call("count", {"text": "a"}, timeout=5)
    assert not result.ok and not result.retryable and "127.0.0.1 is a loopback address" in result.error
    assert oip.requests == []


def test_a_redirect_is_followed_only_to_an_allowed_host_and_without_the_token(tmp_path: Path):
    """The cluster (allowed by the policy, at 127.0.0.2) redirects; each hop is checked before it is dialled."""
    hosts = {"oip.lab.test": "127.0.0.2", "mirror.lab.test": "127.0.0.2"}
    egress = Egress(("127.0.0.2/32",), resolver=lambda host, port: [hosts.get(host, host)])
    allowed = OipServer({"count": bytes_model(words)}, token_check=None, preloaded=True)
    allowed.address = "127.0.0.2"
    with allowed, OipServer({"count": bytes_model(words)}, token_check=None, preloaded=True) as loopback:
        url = f"http://oip.lab.test:{allowed.port}"
        cluster = HttpCluster.from_options(
            {"kind": "http", "preset": "oip", "url": url}, context_with(tmp_path, egress)
        )
        cluster._session.headers["Authorization"] = "Bearer hop-t0ken"  # over http: this test's servers only
        allowed.fail_next(1, 307, headers={"Location": f"{loopback.url}/v2/models/count/infer"})
        refused = cluster.call("count", {"text": "a b"}, timeout=5)
        assert not refused.ok and "127.0.0.1 is a loopback address" in refused.error
        assert loopback.requests == []
        allowed.fail_next(1, 307, headers={"Location": f"http://mirror.lab.test:{allowed.port}/v2/models/count/infer"})
        moved = cluster.call("count", {"text": "a b"}, timeout=5)
        assert (moved.ok, moved.output) == (True, '{"words": 2}'), moved.error
        first, second = allowed.requests[-2:]
        assert first.header("Host") == f"oip.lab.test:{allowed.port}" and first.header("Authorization")
        assert second.header("Host") == f"mirror.lab.test:{allowed.port}" and second.header("Authorization") is None


def context_with(tmp_path: Path, egress: Egress) -> ClusterContext:
    return ClusterContext(tmp_path, "w", egress=egress)
