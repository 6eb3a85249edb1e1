"""The egress rule: which addresses are refused, and connections that dial only the address that was checked."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipelines.steps.egress import Egress, EgressError, Resolver, classify, status_line
from tests.pipelines.destinations import hosts_contacted
from tests.servers.base import LoopbackServer, Request, Response

PUBLIC = "93.184.215.14"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local (where cloud metadata servers answer)"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.0.0.5", "private (RFC 1918)"),
        ("172.16.3.4", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("100.64.0.1", "shared address space (CGNAT, 100.64.0.0/10)"),
        ("fd12:3456::1", "unique local (private)"),
        ("fc00::1", "unique local (private)"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "'this network' (0.0.0.0/8)"),
        ("0.1.2.3", "'this network' (0.0.0.0/8)"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved (240.0.0.0/4, broadcast included)"),
        ("255.255.255.255", "reserved (240.0.0.0/4, broadcast included)"),
        ("192.0.2.10", "special-purpose (not globally routable)"),  # documentation (TEST-NET-1)
        # IPv4 inside IPv6 is judged as the IPv4 address it reaches.
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("::ffff:169.254.169.254", "link-local (where cloud metadata servers answer) (embedded in ::ffff:a9fe:a9fe)"),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::a9fe:a9fe", "link-local (where cloud metadata servers answer) (embedded in 64:ff9b::a9fe:a9fe)"),
        ("64:ff9b::10.0.0.5", "private (RFC 1918) (embedded in 64:ff9b::a00:5)"),
        ("64:ff9b::8.8.8.8", None),
        ("64:ff9b:1::1", "local-use NAT64 (RFC 8215)"),
        ("2002:7f00:1::", "loopback (embedded in 2002:7f00:1::)"),
        ("2002:a9fe:a9fe::1", "link-local (where cloud metadata servers answer) (embedded in 2002:a9fe:a9fe::1)"),
        ("2002:808:808::1", None),
        ("2001::1", "Teredo tunnel"),
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
        ("fec0::1", "site-local (deprecated)"),
    ],
)
def test_classify(address: str, reason: str | None):
    assert classify(address) == reason


def resolver_of(table: Mapping[str, Sequence[str]]) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        if host in table:
            return table[host]
        raise OSError(f"{host}: no such name in this test")

    return resolve


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://169.254.169.254/computeMetadata/v1/", "169.254.169.254 is a link-local (where cloud metadata"),
        ("https://10.0.0.5/", "10.0.0.5 is a private (RFC 1918) address: refused unless the deployment's policy"),
        ("https://[::1]:8443/", "::1 is a loopback address"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback (embedded in ::ffff:7f00:1) address"),
        ("http://localhost:8080/", "localhost names a private host"),
        ("https://metadata.google.internal/", "metadata.google.internal names a private host"),
        ("https://METADATA.google.internal./", "metadata.google.internal names a private host"),
        ("https://metadata/", "metadata names a private host"),
        ("https://kubernetes.default.svc/", "kubernetes.default.svc names a private host"),
        ("https://minio.store.svc.cluster.local/", "minio.store.svc.cluster.local names a private host"),
        ("https://kubernetes/", "kubernetes names a private host"),  # completed by the cluster's search domains
        # Every address a name resolves to is checked, not only the first.
        ("https://lims.lab.example/", "lims.lab.example resolves to 10.1.2.3, a private (RFC 1918) address"),
        ("https://rebind.example/", "rebind.example resolves to 169.254.169.254, a link-local"),
    ],
)
def test_the_strict_rule_refuses_private_hosts(url: str, message: str):
    egress = Egress(
        resolver=resolver_of({"lims.lab.example": [PUBLIC, "10.1.2.3"], "rebind.example": ["169.254.169.254"]})
    )
    with pytest.raises(EgressError) as refused:
        egress.resolve(url)
    assert refused.value.status == 403 and str(refused.value).startswith(message)


def test_the_policy_allows_names_and_ranges_it_lists():
    table = {"minio.lab.internal": ["10.0.0.5"], "store.lab.example": ["10.20.0.7", "fd00::7"], "x.example": [PUBLIC]}
    egress = Egress(("minio.lab.internal", "10.20.0.0/16", "fd00::/64"), resolver=resolver_of(table))
    assert egress.resolve("https://minio.lab.internal:9000/b").addresses == ("10.0.0.5",)
    assert egress.resolve("https://store.lab.example/").addresses == ("10.20.0.7", "fd00::7")
    assert egress.resolve("https://[::ffff:10.20.0.9]/").addresses == ("::ffff:10.20.0.9",)  # the range, mapped
    assert egress.resolve("https://x.example/").port == 443
    with pytest.raises(EgressError, match=r"10\.30\.0\.1 is a private"):
        egress.resolve("https://10.30.0.1/")  # outside the range
    with pytest.raises(EgressError, match=r"metadata\.google\.internal names a private host"):
        egress.resolve("https://metadata.google.internal/")  # names are exact


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1/8", "expected a CIDR, found '10.0.0.1/8'"),  # host bits set: a typo, not a range
        ("10.0.0.0/33", "expected a CIDR, found '10.0.0.0/33'"),
        ("*.lab.example", "expected host names and CIDRs, found '*.lab.example'"),
        ("", "expected host names and CIDRs, found ''"),
    ],
)
def test_allow_private_entries_are_checked(entry: str, message: str):
    with pytest.raises(ValueError, match=f"egress.allow_private: {message}".replace("*", r"\*").replace(".", r"\.")):
        Egress((entry,))


def test_an_unresolvable_name_is_left_to_the_connection():
    egress = Egress(resolver=resolver_of({}))
    egress.check("https://not-yet.example/")  # no verdict now: the client fails to connect on its own
    with pytest.raises(OSError):
        egress.resolve("https://not-yet.example/")
    with pytest.raises(requests.ConnectionError):  # as a failed connection, so the http destination retries it
        egress.session().get("https://not-yet.example/", timeout=5)


@pytest.mark.parametrize(
    ("status", "line"),
    [(403, "HTTP 403 Forbidden"), (500, "HTTP 500 Internal Server Error"), (401, "HTTP 401 Unauthorized"),
     (599, "HTTP 599")],
)  # fmt: skip
def test_a_status_line_is_the_code_and_its_standard_phrase(status: int, line: str):
    # Never the server's reason phrase: a careless one says "Unauthorized: Bearer <token>" (tests/pipelines/
    # test_echoed_secrets.py sends one through the push step).
    assert status_line(status) == line


# --- connections dial the address that was checked -------------------------------------------------------


class Echo(LoopbackServer):
    """Answers 200 with what it was asked; listens where `address` says."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        super().__init__()
        self.address = address

    def handle(self, request: Request) -> Response:
        return Response.json(200, {"path": request.path})


class Rebinding:
    """A DNS server that answers the allowed address once, then the metadata server's."""

    def __init__(self, first: str) -> None:
        self.answers = [first]
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if self.answers else "169.254.169.254"]


@pytest.fixture
def allowed() -> Iterator[Echo]:
    with Echo("127.0.0.2") as server:  # the policy allows 127.0.0.2/32 only: 127.0.0.1 stays refused
        yield server
    assert server.errors == []


def test_the_session_dials_the_checked_address_once_with_the_name_as_host(allowed: Echo):
    dns = Rebinding("127.0.0.2")
    egress = Egress(("127.0.0.2/32",), resolver=dns)
    with hosts_contacted() as contacted, egress.session() as session:
        answer = session.get(f"http://lims.lab.test:{allowed.port}/samples", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"path": "/samples"}
    # One answer, checked and dialled: a second lookup would have got the metadata server's address.
    assert dns.asked == ["lims.lab.test"]
    assert "lims.lab.test" not in contacted and "127.0.0.2" in contacted  # the system resolver never saw the name
    [request] = allowed.requests
    assert request.header("Host") == f"lims.lab.test:{allowed.port}"


def test_a_redirect_to_a_refused_address_is_not_followed(allowed: Echo):
    egress = Egress(("127.0.0.2/32",), resolver=resolver_of({"lims.lab.test": ["127.0.0.2"]}))
    with Echo() as elsewhere, egress.session() as session:
        allowed.fail_next(1, 302, headers={"Location": f"{elsewhere.url}/latest/meta-data"})
        with pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address"):
            session.get(f"http://lims.lab.test:{allowed.port}/samples", timeout=5)
        assert elsewhere.requests == []


def test_the_urllib3_pool_manager_dials_checked_addresses_only(allowed: Echo):
    dns = Rebinding("127.0.0.2")
    manager = Egress(("127.0.0.2/32",), resolver=dns).pool_manager()
    answer = manager.request("GET", f"http://kfp.lab.test:{allowed.port}/apis/v2beta1/healthz", timeout=5)
    assert answer.status == 200 and dns.asked == ["kfp.lab.test"]
    assert allowed.requests[0].header("Host") == f"kfp.lab.test:{allowed.port}"
    with Echo() as refused, pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address"):
        manager.request("GET", f"{refused.url}/apis/v2beta1/healthz", timeout=5)
    assert refused.requests == []


# --- TLS: the certificate is checked against the name, though the address is dialled -----------------------


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_verifies_the_name_and_sends_it_as_sni(tmp_path: Path):
    cert_path, key_path = _certificate(tmp_path, "lims.lab.test")
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    table = {"lims.lab.test": ["127.0.0.2"], "other.lab.test": ["127.0.0.2"]}
    egress = Egress(("127.0.0.2/32",), resolver=resolver_of(table))
    with Echo("127.0.0.2") as server:
        assert server._httpd is not None
        server._httpd.socket = context.wrap_socket(server._httpd.socket, server_side=True)
        with egress.session() as session:
            answer = session.get(f"https://lims.lab.test:{server.port}/x", verify=str(cert_path), timeout=5)
            assert answer.status_code == 200
            # The same address under a name the certificate does not hold: refused, though the address is allowed.
            with pytest.raises(requests.exceptions.SSLError, match=r"other\.lab\.test"):
                session.get(f"https://other.lab.test:{server.port}/x", verify=str(cert_path), timeout=5)
    assert names[0] == "lims.lab.test"
