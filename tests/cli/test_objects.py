"""`relay ls` and `relay cat` on a local results folder and on S3 (moto's server); tests/cli/test_emulators.py
reads gs:// from fake-gcs-server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from relay import naming
from relay.service import Relay
from tests.cli.support import ECHO, Ran, drop

Cli = Callable[..., Ran]


def test_the_run_records_are_listed_and_printed(cli: Cli, relay: Relay, results: str):
    key = drop(relay, ECHO, "t.json").run_key or ""
    record = Path(naming.launch_record(results, key))
    listed = cli("ls")  # the results location, by default
    size, width = str(record.stat().st_size), max(len(str(record.stat().st_size)), 4)
    assert listed.code == 0 and listed.out.splitlines() == [
        f"{'SIZE':{width}}  URI",
        f"{size:{width}}  {record.as_uri()}",
    ]
    printed = cli("cat", record.as_uri())  # as listed
    assert (printed.code, printed.out) == (0, record.read_text())
    assert json.loads(printed.out)["run_key"] == key
    head = cli("cat", str(record), "--bytes", "5")
    assert head.out == record.read_text()[:5]
    assert head.err == f"relay cat: {record}: the first 5 of {record.stat().st_size} bytes\n"


def test_what_is_not_one_object_is_refused(cli: Cli, results: str, tmp_path: Path):
    folder = cli("cat", results)
    assert folder.code == 2 and "expected one object, found a folder" in folder.err
    missing = cli("ls", str(tmp_path / "nothing-here"))
    assert missing.code == 1 and missing.out == ""
    other = cli("cat", "https://example.com/x")
    assert other.code == 2 and "expected gs://bucket/..., s3://bucket/... or a local path" in other.err


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_objects_are_listed_and_streamed(
    cli: Cli, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "lab",
        "AWS_SECRET_ACCESS_KEY": "lab-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="lab-archive")
    big = b"".join(b"%015d\n" % n for n in range(65536))  # 1 MiB, each line its own
    s3.put_object(Bucket="lab-archive", Key="assay/big.bin", Body=big)
    s3.put_object(Bucket="lab-archive", Key="assay/plate.json", Body=b'{"plate": 9}')
    listed = cli("ls", "s3://lab-archive/assay", "--json")
    assert listed.code == 0, listed.err
    assert [(o["uri"], o["size"]) for o in listed.json()] == [
        ("s3://lab-archive/assay/big.bin", len(big)),
        ("s3://lab-archive/assay/plate.json", 12),
    ]
    one = cli("ls", "s3://lab-archive/assay/", "--limit", "1")
    assert one.out.splitlines()[1:] == [f"{len(big)}  s3://lab-archive/assay/big.bin", "", one.out.splitlines()[-1]]
    assert one.out.splitlines()[-1].startswith("more than 1: --limit N lists more")
    assert cli("cat", "s3://lab-archive/assay/plate.json").out == '{"plate": 9}'
    whole = cli("cat", "s3://lab-archive/assay/big.bin")
    assert (whole.code, whole.out.encode()) == (0, big)
    head = cli("cat", "s3://lab-archive/assay/big.bin", "--bytes", "32")
    assert (head.out, head.err) == (
        "000000000000000\n000000000000001\n",
        f"relay cat: s3://lab-archive/assay/big.bin: the first 32 of {len(big)} bytes\n",
    )
    missing = cli("cat", "s3://lab-archive/assay/none.json")
    assert missing.code == 1 and missing.err.startswith("relay cat: s3://lab-archive/assay/none.json:")
