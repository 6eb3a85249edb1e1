"""HttpDestination against a loopback LIMS that checks the token and records what arrives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, StepSpec, run_step, spec_for
from pipelines.steps.destinations import Presence, Receipt, default_factories
from pipelines.steps.destinations.http import HttpDestination, retry_after
from pipelines.steps.egress import Egress, EgressError
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from pipelines.steps.push import push
from relay.policy import Context, check_request, parse_policy
from relay.secrets import LocalSecrets
from tests.policies import TrustingGate
from tests.servers.lims import LimsServer, parts_of

pytestmark = pytest.mark.integration
TOKEN = "Bearer lims-7f3a9c2e51d84b6a"
REPO = Path(__file__).resolve().parents[3]
MB = 1024 * 1024
LOOPBACK = Egress.loopback()  # the servers listen on 127.0.0.1, which deployed pipelines refuse


class Sleeps(list[float]):
    """Stands in for time.sleep: keeps the waits asked for, waits none."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def lims() -> Iterator[LimsServer]:
    with LimsServer(authorization=TOKEN) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def destination(lims: LimsServer, sleeps: Sleeps, **options: Any) -> HttpDestination:
    headers = options.pop("headers", {"Authorization": TOKEN, "X-Lab": "assay-2"})
    return HttpDestination.from_options(
        {"url": f"{lims.url}/samples/upload", "headers": headers, **options}, sleep=sleeps, egress=LOOPBACK
    )


def item_for(data: bytes, name: str = "plate-1/result.json", content_type: str = "application/json") -> SourceObject:
    return SourceObject(
        uri=f"file:///lab/{name}", name=name, size=len(data), checksums=of_bytes(data), content_type=content_type
    )


def send(target: HttpDestination, data: bytes, *, overwrite: bool = False, **fields: Any) -> Receipt:
    return target.send(item_for(data, **fields), HashingReader(io.BytesIO(data)), overwrite=overwrite)


DATA = json.dumps({"od600": [0.1, 0.2], "note": "line\r\nbreaks\x00and bytes"}).encode() + bytes(range(256))


def test_a_raw_post_arrives_byte_exact_with_its_content_type_and_headers(lims: LimsServer, sleeps: Sleeps):
    receipt = send(destination(lims, sleeps), DATA)
    [upload] = lims.uploads
    assert upload.request.method == "POST" and upload.request.path == "/samples/upload"
    assert upload.request.body == DATA
    assert upload.request.header("Content-Type") == "application/json"
    assert upload.request.header("Content-Length") == str(len(DATA))  # not chunked: many servers refuse that
    assert upload.request.header("X-Lab") == "assay-2"
    assert receipt == Receipt(
        source="file:///lab/plate-1/result.json",
        destination=f"{lims.url}/samples/upload",
        bytes=len(DATA),
        checksum=of_bytes(DATA).describe(),
        version="rec-1",  # the id in the JSON answer
    )
    assert sleeps == []


@pytest.mark.parametrize("field", [None, "attachment"])
def test_multipart_sends_one_file_part_named_after_the_object(lims: LimsServer, sleeps: Sleeps, field: str | None):
    options = {"body": "multipart"} | ({"field": field} if field else {})
    send(destination(lims, sleeps, **options), DATA, content_type="text/csv")
    [upload] = lims.uploads
    assert (upload.request.header("Content-Type") or "").startswith("multipart/form-data; boundary=")
    [part] = upload.parts
    assert (part.name, part.filename, part.content_type) == (field or "file", "plate-1/result.json", "text/csv")
    assert part.data == DATA


@pytest.mark.parametrize("body", ["raw", "multipart"])
def test_a_429_is_retried_after_the_wait_it_asks_for_with_the_same_body(lims: LimsServer, sleeps: Sleeps, body: str):
    lims.fail_next(1, 429, body={"error": "slow down"}, headers={"Retry-After": "7"})
    receipt = send(destination(lims, sleeps, body=body), DATA)
    assert sleeps == [7.0]
    first, second = lims.requests
    assert first.faulted and not second.faulted
    for request in (first, second):
        assert (parts_of(request)[0].data if body == "multipart" else request.body) == DATA
    assert receipt.version == "rec-1"


def test_failures_without_retry_after_back_off_exponentially_then_give_up(lims: LimsServer, sleeps: Sleeps):
    lims.fail_next(3, 503)
    with pytest.raises(StepError) as failed:
        send(destination(lims, sleeps, max_attempts=3), DATA)
    assert failed.value.status == 502
    assert str(failed.value) == (
        f"POST {lims.url}/samples/upload: no success in 3 attempt(s); the last answered HTTP 503 Service Unavailable"
    )
    assert sleeps == [1.0, 2.0] and len(lims.requests) == 3 and lims.uploads == []


def test_a_refused_connection_is_retried_for_a_post_as_nothing_was_sent(sleeps: Sleeps):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    target = HttpDestination.from_options(
        {"url": f"http://127.0.0.1:{port}/samples/upload?key=s3cr3t-in-query", "max_attempts": 2},
        sleep=sleeps,
        egress=LOOPBACK,
    )
    with pytest.raises(StepError, match=r"no success in 2 attempt\(s\); the last no answer \(ConnectionError\)") as e:
        send(target, DATA)
    assert sleeps == [1.0] and "s3cr3t-in-query" not in str(e.value)


def test_a_400_is_not_retried_and_its_message_is_the_status_line_only(lims: LimsServer, sleeps: Sleeps):
    echo = {"error": "sample_id missing", "request": {"authorization": TOKEN, "token": TOKEN.split()[1]}}
    lims.fail_next(1, 400, body=echo)
    with pytest.raises(StepError) as refused:
        send(destination(lims, sleeps), DATA)
    assert refused.value.status == 400 and len(lims.requests) == 1 and sleeps == []
    # The body is the server's text (here echoing the token): it goes into no message or record.
    assert str(refused.value) == f"POST {lims.url}/samples/upload: answered HTTP 400 Bad Request"


def test_a_wrong_token_names_the_headers_but_not_their_values(lims: LimsServer, sleeps: Sleeps):
    wrong = "Bearer expired-0c1d2e3f4a5b"
    with pytest.raises(StepError) as denied:
        send(destination(lims, sleeps, headers={"Authorization": wrong, "X-Api-Key": "k3y-98765432"}), DATA)
    message = str(denied.value)
    assert denied.value.status == 401 and message == (
        f"POST {lims.url}/samples/upload: answered HTTP 401 Unauthorized; "
        "headers sent: Authorization, X-Api-Key (values not shown)"
    )  # the server echoed the token in its body, which is not shown


def test_put_by_name_is_create_only_and_exists_url_finds_what_is_there(lims: LimsServer, sleeps: Sleeps):
    files = f"{lims.url}/files/{{name}}"
    target = destination(lims, sleeps, url=files, method="PUT", exists_url=files)
    item = item_for(DATA)
    assert target.check(item, item.checksums) is Presence.ABSENT
    receipt = send(target, DATA)
    assert receipt.destination == f"{lims.url}/files/plate-1%2Fresult.json"  # one path segment, quoted
    assert receipt.version == "/files/plate-1%2Fresult.json"  # the Location
    assert lims.files == {"plate-1/result.json": DATA}
    assert target.check(item, item.checksums) is Presence.SAME  # by the ETag, the MD5 in hex
    changed = DATA + b"!"
    assert target.check(item_for(changed), of_bytes(changed)) is Presence.DIFFERENT
    with pytest.raises(StepError, match=r"something is there already.*set overwrite to replace it") as kept:
        send(target, changed)
    assert kept.value.status == 409 and lims.files["plate-1/result.json"] == DATA
    send(target, changed, overwrite=True)
    assert lims.files["plate-1/result.json"] == changed


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        (format_datetime(datetime(2026, 11, 21, 12, 2, tzinfo=UTC), usegmt=True), 120.0),
        ("Sat, 21 Nov 2026 11:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("nan", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_or_an_http_date(value: str | None, seconds: float | None):
    assert retry_after(value, datetime(2026, 11, 21, 12, 0, tzinfo=UTC)) == seconds


def test_a_retry_after_date_is_waited_for_from_now(lims: LimsServer, sleeps: Sleeps):
    when = datetime.now(UTC) + timedelta(seconds=90)
    lims.fail_next(1, 503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    send(destination(lims, sleeps), DATA)
    [waited] = sleeps
    assert 85 <= waited <= 90


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"url": "http://lims.lab.example/api"}, "destination.url: expected https:// (plain http only to this machine"),
        ({"url": "https://svc:pa55word@lims.lab.example/api"}, "expected a URL without credentials"),
        ({"headers": {"Authorization": "Bearer abc\r\nX-Evil: 1"}}, "headers.Authorization: expected a one-line"),
        ({"headers": {"Host": "admin.internal"}}, "headers.Host: expected a header the step does not set itself"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "headers.Transfer-Encoding: expected a header the step"),
        ({"headers": {"X-Forwarded-For": "10.0.0.1"}}, "headers.X-Forwarded-For: expected a header the step"),
        ({"headers": {"Proxy-Authorization": "x"}}, "headers.Proxy-Authorization: expected a header the step"),
        ({"headers": {"X-Token\n": "x"}}, "destination.headers: expected header names"),
        ({"method": "PATCH"}, "destination.method: expected POST or PUT"),
        ({"body": "json"}, "destination.body: expected raw or multipart"),
        ({"max_attempts": 0}, "destination.max_attempts: expected a whole number from 1 to 20, found 0"),
        ({"max_attempts": 10**9}, "destination.max_attempts: expected a whole number from 1 to 20, found 1000000000"),
        ({"max_attempts": 2.5}, "destination.max_attempts: expected a whole number from 1 to 20, found 2.5"),
        ({"timeout": "60"}, "destination.timeout: expected seconds above 0, at most 600, found '60'"),
        ({"timeout": 10**9}, "destination.timeout: expected seconds above 0, at most 600, found 1000000000"),
        ({"timeout": float("nan")}, "destination.timeout: expected seconds above 0, at most 600, found nan"),
        ({"retries": 3}, "found retries"),
    ],
)
def test_bad_options_are_refused_without_echoing_header_values(
    lims: LimsServer, sleeps: Sleeps, options: dict[str, Any], fragment: str
):
    with pytest.raises(StepError) as refused:
        destination(lims, sleeps, **options)
    assert refused.value.status == 400 and fragment in str(refused.value)
    assert "pa55word" not in str(refused.value) and "Bearer abc" not in str(refused.value)


def test_the_push_step_resolves_the_token_and_skips_what_is_there(lims: LimsServer, tmp_path: Path):
    root = tmp_path / "processed"
    (root / "plate-1").mkdir(parents=True)
    (root / "plate-1" / "result.json").write_text(json.dumps({"od600": [0.1]}))
    (root / "plate-2.csv").write_text("A1,0.3\n")
    files = f"{lims.url}/files/{{name}}"
    config = {
        "kind": "http",
        "url": files,
        "method": "PUT",
        "exists_url": files,
        "headers": {"Authorization": "secret://lims-token"},
    }
    spec = spec_for(inputs={"sources": [f"{root.as_uri()}/"]}, outputs={}, parameters={"destination": config})

    def step(spec: StepSpec, context: StepContext) -> StepResult:
        return push(spec, context, factories=default_factories(egress=LOOPBACK))

    def context() -> StepContext:
        return StepContext(resolver=LocalSecrets(env={"RELAY_SECRET_LIMS_TOKEN": TOKEN}), gate=TrustingGate())

    result = run_step(step, spec, context())
    assert result.status == 200, result.message
    assert lims.files == {"plate-1/result.json": b'{"od600": [0.1]}', "plate-2.csv": b"A1,0.3\n"}
    again = run_step(step, spec, context())
    assert again.status == 200 and again.metrics["skipped"] == 2
    for outcome in (result, again):
        assert TOKEN.split()[1] not in json.dumps(outcome.to_json())


SEND_BIG = """
    import json, sys, tracemalloc
    from pathlib import Path
    from pipelines.steps.checksums import Checksums, HashingReader
    from pipelines.steps.destinations.http import HttpDestination
    from pipelines.steps.egress import Egress
    from pipelines.steps.objects import SourceObject
    import requests_toolbelt  # imported before measuring, like the rest of what a send uses

    path, url, body = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    options = {"url": url, "headers": {"Authorization": sys.stdin.read()}, "body": body}
    item = SourceObject(uri=path.as_uri(), name=path.name, size=path.stat().st_size, checksums=Checksums())
    tracemalloc.start()
    with path.open("rb") as source:
        target = HttpDestination.from_options(options, egress=Egress.loopback())
        receipt = target.send(item, HashingReader(source), overwrite=False)
    print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "bytes": receipt.bytes}))
"""


@pytest.mark.parametrize("body", ["raw", "multipart"])
def test_a_30_mb_object_is_sent_with_bounded_memory(lims: LimsServer, tmp_path: Path, body: str):
    path, spool = tmp_path / "scan.tiff", tmp_path / "spool"
    spool.mkdir()
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(30):
            piece = os.urandom(MB)
            out.write(piece)
            digest.update(piece)
    # The sender runs in its own interpreter: there tracemalloc counts its allocations only, not this server's,
    # which holds the whole body it received.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SEND_BIG), str(path), f"{lims.url}/samples/upload", body],
        input=TOKEN,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'functions'}", "TMPDIR": str(spool)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["bytes"] == 30 * MB
    assert measured["peak"] < 10 * MB, f"peak {measured['peak'] / MB:.1f} MiB for a 30 MiB object"
    [upload] = lims.uploads
    assert hashlib.sha256(upload.data).digest() == digest.digest()
    assert list(spool.iterdir()) == []  # the spool file had no name there, and nothing is left behind


# --- egress: where the adapter may connect ----------------------------------------------------------------


def test_by_default_a_loopback_url_is_refused_before_anything_is_sent(lims: LimsServer):
    options = {"url": f"{lims.url}/samples/upload", "headers": {"Authorization": TOKEN}}
    with pytest.raises(EgressError) as refused:
        HttpDestination.from_options(options)  # the default: a deployed pipeline's, public addresses only
    assert refused.value.status == 403
    assert str(refused.value) == "127.0.0.1 is a loopback address: refused unless the deployment's policy allows it"
    # Built without that first check, the connection itself is refused: the request never leaves.
    with pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address"):
        send(HttpDestination(f"{lims.url}/samples/upload", headers={"Authorization": TOKEN}), DATA)
    assert lims.requests == []


def test_a_proxy_from_the_environment_is_not_used(lims: LimsServer, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch):
    with LimsServer(authorization=TOKEN) as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)  # it would connect for the step, to an address never checked
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        send(destination(lims, sleeps), DATA)
        assert proxy.requests == [] and len(lims.uploads) == 1


class OtherLoopbackLims(LimsServer):
    """The LIMS on 127.0.0.2: still this machine (all of 127.0.0.0/8 is loopback), but not the address 127.0.0.1."""

    address = "127.0.0.2"


def test_a_plain_http_url_the_policy_admits_on_another_loopback_address_is_sent_to(sleeps: Sleeps):
    # One rule for where credentials travel: a URL the policy admits must not be refused by the step that runs it.
    with OtherLoopbackLims(authorization=TOKEN) as other:
        url = f"{other.url}/samples/upload"
        policy = parse_policy(
            f"tenants:\n  - name: lab\n    triggers: [gs://trig/lab/]\n    sources: [gs://data/lab/]\n"
            f'    destinations:\n      - {{id: h, kind: http, url: "{url}"}}\n',
            "p.yaml",
        )
        context = Context(local=True, protected=())
        parameters = {"sources": ["gs://data/lab/x"], "destination": {"kind": "http", "url": url}}
        assert check_request(policy, policy.tenant("lab"), "push", parameters, context) == []
        target = HttpDestination.from_options(
            {"url": url, "headers": {"Authorization": TOKEN}}, sleep=sleeps, egress=LOOPBACK
        )
        send(target, DATA)
        [upload] = other.uploads
    assert upload.data == DATA
