"""S3Destination against moto's S3 protocol server on loopback, with IAM authentication switched on."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, StepSpec, run_step, spec_for
from pipelines.steps.destinations import Presence, Receipt, default_factories
from pipelines.steps.destinations.s3 import CRC32C_KEY, MD5_KEY, MIN_PART, S3Destination, make_client
from pipelines.steps.egress import Egress, EgressError
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.policies import TrustingGate
from tests.servers.lims import LimsServer

pytestmark = pytest.mark.integration
BUCKET = "relay-ml-data"
VERSIONED = "relay-ml-versions"
LOOPBACK = Egress.loopback()  # moto listens on 127.0.0.1, which deployed pipelines refuse
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class Store:
    endpoint: str
    key_id: str
    secret: str

    def options(self, **more: Any) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "bucket": BUCKET,
            "access_key_id": self.key_id,
            "secret_access_key": self.secret,
            **more,
        }

    def client(self) -> Any:
        return make_client(
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=self.key_id,
            secret_access_key=self.secret,
            session_token=None,
        )


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    setup = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
    iam = setup.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="relay-push")
    iam.put_user_policy(UserName="relay-push", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="relay-push")["AccessKey"]
    s3 = setup.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=VERSIONED)
    s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
    # From here on every request is authenticated and authorised against IAM, as on AWS or MinIO.
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield Store(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
        server.stop()


def item_for(data: bytes, name: str, **fields: Any) -> SourceObject:
    return SourceObject(uri=f"file:///lab/{name}", name=name, size=len(data), checksums=of_bytes(data), **fields)


def send(destination: S3Destination, item: SourceObject, data: bytes, *, overwrite: bool = False) -> Receipt:
    return destination.send(item, HashingReader(io.BytesIO(data)), overwrite=overwrite)


def test_objects_arrive_with_their_content_type_and_metadata(store: Store, request: pytest.FixtureRequest):
    destination = S3Destination.from_options(store.options(prefix=f"/{request.node.name}/"), egress=LOOPBACK)
    data = json.dumps({"od600": [0.1, 0.2]}).encode()
    item = item_for(data, "plate-1/result.json", content_type="application/json", metadata={"instrument": "r-7"})
    receipt = send(destination, item, data)
    key = f"{request.node.name}/plate-1/result.json"
    stored = store.client().get_object(Bucket=BUCKET, Key=key)
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "application/json"
    assert stored["Metadata"] == {"instrument": "r-7", CRC32C_KEY: item.checksums.crc32c, MD5_KEY: item.checksums.md5}
    assert receipt == Receipt(
        source=item.uri,
        destination=f"s3://{BUCKET}/{key}",
        bytes=len(data),
        checksum=item.checksums.describe(),
        version=hashlib.md5(data).hexdigest(),  # no versioning on the bucket: the ETag
    )


def test_a_rerun_finds_the_same_object_and_never_replaces_a_different_one(store: Store, request: pytest.FixtureRequest):
    destination = S3Destination.from_options(store.options(prefix=request.node.name), egress=LOOPBACK)
    first, second = b"plate,od600\nA1,0.1\n", b"plate,od600\nA1,0.9\n"
    assert destination.check(item_for(first, "a.csv"), of_bytes(first)) is Presence.ABSENT
    send(destination, item_for(first, "a.csv"), first)
    assert destination.check(item_for(first, "a.csv"), of_bytes(first)) is Presence.SAME
    assert destination.check(item_for(second, "a.csv"), of_bytes(second)) is Presence.DIFFERENT
    # Create-only without overwrite: as if another writer got there between check and send.
    with pytest.raises(StepError) as raced:
        send(destination, item_for(second, "a.csv"), second)
    assert raced.value.status == 409 and "appeared meanwhile" in str(raced.value)
    send(destination, item_for(second, "a.csv"), second, overwrite=True)
    assert destination.check(item_for(second, "a.csv"), of_bytes(second)) is Presence.SAME


def test_an_object_written_by_another_tool_is_compared_by_its_etag(store: Store, request: pytest.FixtureRequest):
    data = b"written with the aws cli"
    store.client().put_object(Bucket=BUCKET, Key=f"{request.node.name}/other.txt", Body=data)
    destination = S3Destination.from_options(store.options(prefix=request.node.name), egress=LOOPBACK)
    assert destination.check(item_for(data, "other.txt"), of_bytes(data)) is Presence.SAME
    assert destination.check(item_for(b"x", "other.txt"), of_bytes(b"x")) is Presence.DIFFERENT


def test_a_multipart_upload_verifies_its_etag_and_is_found_again(store: Store, request: pytest.FixtureRequest):
    destination = S3Destination.from_options(
        store.options(prefix=request.node.name), part_size=MIN_PART, egress=LOOPBACK
    )
    data = os.urandom(2 * MIN_PART + 1000)  # three parts, the last one short
    item = item_for(data, "scan.tiff", content_type="image/tiff")
    receipt = send(destination, item, data)
    parts = [data[i : i + MIN_PART] for i in range(0, len(data), MIN_PART)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert receipt.version == etag and receipt.bytes == len(data)
    head = store.client().head_object(Bucket=BUCKET, Key=f"{request.node.name}/scan.tiff")
    assert head["ETag"] == f'"{etag}"' and head["ContentType"] == "image/tiff"
    body = store.client().get_object(Bucket=BUCKET, Key=f"{request.node.name}/scan.tiff")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert destination.check(item, item.checksums) is Presence.SAME  # by the metadata: the ETag is no MD5


def test_a_source_that_is_shorter_than_it_said_leaves_no_object(store: Store, request: pytest.FixtureRequest):
    destination = S3Destination.from_options(
        store.options(prefix=request.node.name), part_size=MIN_PART, egress=LOOPBACK
    )
    data = os.urandom(MIN_PART + 10)
    stated = item_for(data + b"lost", "cut.bin")
    with pytest.raises(StepError, match="changed or corrupted in transit; not stored") as cut:
        send(destination, stated, data)
    assert cut.value.status == 502
    assert destination.check(stated, stated.checksums) is Presence.ABSENT
    assert store.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted


@pytest.mark.parametrize(("operation", "size"), [("PutObject", 4), ("CompleteMultipartUpload", MIN_PART + 1)])
def test_an_etag_other_than_the_bytes_sent_fails_the_object_and_removes_it(
    store: Store, request: pytest.FixtureRequest, operation: str, size: int
):
    client = store.client()

    def corrupt(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ETag"] = '"00000000000000000000000000000000"'  # what a store that mangled the bytes would answer

    client.meta.events.register(f"after-call.s3.{operation}", corrupt)
    destination = S3Destination(BUCKET, request.node.name, client=client, part_size=MIN_PART)
    data = os.urandom(size)
    with pytest.raises(StepError, match=r"answered ETag '0{32}', the bytes sent have '[0-9a-f-]+'; removed it") as e:
        send(destination, item_for(data, "x.bin"), data)
    assert e.value.status == 502
    # Left there, its metadata (the sender's checksums) would make a re-run skip it.
    assert destination.check(item_for(data, "x.bin"), of_bytes(data)) is Presence.ABSENT


def test_a_versioned_bucket_gives_the_version_id(store: Store):
    destination = S3Destination.from_options(store.options(bucket=VERSIONED), egress=LOOPBACK)
    receipt = send(destination, item_for(b"v1", "model.bin"), b"v1")
    versions = store.client().list_object_versions(Bucket=VERSIONED, Prefix="model.bin")["Versions"]
    assert receipt.version == versions[0]["VersionId"]


@pytest.mark.parametrize("wrong", ["key_id", "secret"])
def test_wrong_keys_are_denied_without_naming_them(store: Store, wrong: str):
    key_id = "AKIAIOSFODNN7EXAMPLE" if wrong == "key_id" else store.key_id
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" if wrong == "secret" else store.secret
    destination = S3Destination.from_options(
        store.options(access_key_id=key_id, secret_access_key=secret), egress=LOOPBACK
    )
    data = b"denied"
    failures = []
    for attempt in (
        lambda: destination.check(item_for(data, "denied.txt"), of_bytes(data)),
        lambda: send(destination, item_for(data, "denied.txt"), data),
    ):
        with pytest.raises(StepError) as denied:
            attempt()
        failures.append(denied.value)
    for failure in failures:
        assert failure.status == 403 and f"s3://{BUCKET}/denied.txt: access denied" in str(failure)
        assert key_id not in str(failure) and secret not in str(failure)
        assert failure.__cause__ is None and failure.__suppress_context__  # botocore's error is not chained


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"endpoint": "http://minio.lab.example:9000"}, "expected https:// (plain http only to this machine"),
        ({"endpoint": "https://admin:hunter2@minio.lab.example"}, "expected a URL without credentials"),
        ({"secret_access_key": 42}, "secret_access_key: expected a non-empty string (a secret:// reference), found a"),
        ({"bucket": ""}, "destination.bucket: expected a non-empty string for s3"),
        ({"secret_acess_key": "x"}, "found secret_acess_key"),
    ],
)
def test_bad_options_are_refused_without_echoing_credentials(store: Store, options: dict[str, Any], fragment: str):
    with pytest.raises(StepError) as refused:
        S3Destination.from_options(store.options(**options), egress=LOOPBACK)
    assert refused.value.status == 400 and fragment in str(refused.value)
    assert "hunter2" not in str(refused.value) and "42" not in str(refused.value)


def test_the_push_step_sends_files_with_keys_given_as_secret_references(store: Store, tmp_path: Path):
    root = tmp_path / "processed"
    (root / "plate-1").mkdir(parents=True)
    (root / "plate-1" / "result.json").write_text(json.dumps({"od600": [0.1]}))
    (root / "plate-2.csv").write_text("A1,0.3\n")
    destination = {
        "kind": "s3",
        "endpoint": store.endpoint,
        "bucket": BUCKET,
        "prefix": "pushed",
        "access_key_id": "secret://minio-key-id",
        "secret_access_key": "secret://minio-secret",
    }
    spec = spec_for(inputs={"sources": [f"{root.as_uri()}/"]}, outputs={}, parameters={"destination": destination})
    secrets = {"RELAY_SECRET_MINIO_KEY_ID": store.key_id, "RELAY_SECRET_MINIO_SECRET": store.secret}

    def step(spec: StepSpec, context: StepContext) -> StepResult:
        return push(spec, context, factories=default_factories(egress=LOOPBACK))

    result = run_step(step, spec, StepContext(resolver=LocalSecrets(env=secrets), gate=TrustingGate()))
    assert result.status == 200, result.message
    assert sorted(r["destination"] for r in result.outputs["receipts"]) == [
        f"s3://{BUCKET}/pushed/plate-1/result.json",
        f"s3://{BUCKET}/pushed/plate-2.csv",
    ]
    stored = store.client().get_object(Bucket=BUCKET, Key="pushed/plate-2.csv")
    assert stored["Body"].read() == b"A1,0.3\n" and stored["ContentType"] == "text/csv"
    again = run_step(step, spec, StepContext(resolver=LocalSecrets(env=secrets), gate=TrustingGate()))
    assert again.status == 200 and again.metrics["skipped"] == 2
    for outcome in (result, again):
        text = json.dumps(outcome.to_json())
        assert store.key_id not in text and store.secret not in text


@pytest.mark.parametrize(
    "endpoint",
    ["https://169.254.169.254", "https://metadata.google.internal", "https://10.0.0.5:9000", "http://localhost:9000"],
)
def test_by_default_a_private_endpoint_is_refused(endpoint: str):
    options = {"endpoint": endpoint, "bucket": BUCKET, "access_key_id": "k", "secret_access_key": "s"}
    with pytest.raises(EgressError, match="refused unless the deployment's policy allows it") as refused:
        S3Destination.from_options(options)
    assert refused.value.status == 403


def test_by_default_a_loopback_endpoint_is_refused_before_any_request():
    with LimsServer(authorization="none") as endpoint:  # stands in for a store: it records what arrives
        options = {"endpoint": endpoint.url, "bucket": BUCKET, "access_key_id": "k", "secret_access_key": "s"}
        with pytest.raises(EgressError, match=r"127\.0\.0\.1 is a loopback address"):
            S3Destination.from_options(options)
        assert endpoint.requests == []


def test_a_proxy_from_the_environment_is_not_used(store: Store, monkeypatch: pytest.MonkeyPatch):
    with LimsServer(authorization="none") as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)  # botocore would send every request there, past the egress check
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        destination = S3Destination.from_options(store.options(prefix="proxied"), egress=LOOPBACK)
        send(destination, item_for(b"direct", "direct.txt"), b"direct")
        assert proxy.requests == []
    assert store.client().get_object(Bucket=BUCKET, Key="proxied/direct.txt")["Body"].read() == b"direct"


@pytest.mark.parametrize(
    ("size", "part"),
    [
        (0, 8 * 1024 * 1024),
        (78 * 1024**3, 8 * 1024 * 1024),
        (80 * 1024**3, 9 * 1024 * 1024),  # 10,240 parts of 8 MiB would be too many
        (5 * 1024**4, 525 * 1024 * 1024),  # S3's largest object in 10,000 parts at most
    ],
)
def test_parts_grow_with_the_object_to_fit_in_ten_thousand(size: int, part: int):
    from pipelines.steps.destinations.s3 import MAX_PARTS, part_size_for

    assert part_size_for(size) == part
    assert math.ceil(size / part_size_for(size)) <= MAX_PARTS
    assert part_size_for(1, smallest=MIN_PART) == MIN_PART


def test_an_s3_source_is_read_from_any_offset_and_only_as_it_was_listed(store: Store):
    from pipelines.steps.objects import S3Objects

    client = store.client()
    for n in range(3):
        client.put_object(Bucket=BUCKET, Key=f"source/plate-{n}.bin", Body=bytes([n]) * 1000)
    objects = S3Objects(client)
    listed = list(objects.list(f"s3://{BUCKET}/source/"))
    assert [item.name for item in listed] == ["plate-0.bin", "plate-1.bin", "plate-2.bin"]
    with objects.open(listed[1], 990) as stream:
        assert stream.read() == b"\x01" * 10
    client.put_object(Bucket=BUCKET, Key="source/plate-2.bin", Body=b"replaced")
    with pytest.raises(StepError, match=r"plate-2\.bin: changed since it was listed"):
        objects.open(listed[2])  # its ETag is another now: never the new bytes under the old listing
