"""The kaggle destination through kagglesdk against a loopback Kaggle API: datasets, versions, blobs, failures."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, spec_for
from pipelines.steps.destinations import Destination, Presence
from pipelines.steps.destinations.kaggle import KaggleDestination
from pipelines.steps.egress import Egress
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.pipelines.destinations import hosts_contacted
from tests.policies import TrustingGate
from tests.servers.kaggle import KaggleServer

KEY = "kgl-7f3a9c0e5b1d-canary"  # distinctive, so a leak into any message is found
SECRETS = {"RELAY_SECRET_KAGGLE_KEY": KEY}
LOOPBACK = Egress.loopback()  # the Kaggle API here listens on 127.0.0.1, which deployed pipelines refuse


@pytest.fixture
def kaggle() -> Iterator[KaggleServer]:
    with KaggleServer(username="lab-bot", key=KEY) as server:
        yield server
        assert server.errors == []


def destination(server: KaggleServer, **options: Any) -> dict[str, Any]:
    return {
        "kind": "kaggle",
        "dataset": "lab-bot/plate-reader-od600",
        "title": "Plate reader OD600",
        "licence": "CC0-1.0",
        "username": "lab-bot",
        "key": "secret://kaggle-key",
        "endpoint": server.url,
        **options,
    }


def run(
    sources: list[str],
    config: Mapping[str, Any],
    spool: Path,
    secrets: Mapping[str, str] = SECRETS,
    egress: Egress = LOOPBACK,
    **parameters: Any,
) -> StepResult:
    """The push step itself, not `run_step`: its redaction would hide a key the adapter leaked into a message."""

    def factory(options: Mapping[str, Any]) -> Destination:
        return KaggleDestination.from_options(options, temp_root=str(spool), egress=egress)

    spec = spec_for(
        inputs={"sources": sources}, outputs={}, parameters={"destination": config, "run_key": "push-7", **parameters}
    )
    context = StepContext(resolver=LocalSecrets(env=secrets), gate=TrustingGate())
    return push(spec, context, factories={"kaggle": factory})


def test_a_push_creates_the_dataset_with_its_metadata_and_folders(kaggle: KaggleServer, source: Path, spool: Path):
    environ = dict(os.environ)
    with hosts_contacted() as hosts:
        result = run([f"{source}/"], destination(kaggle), spool)
    assert result.status == 200, result.message
    assert dict(os.environ) == environ  # no KAGGLE_USERNAME or KAGGLE_KEY set on the way
    assert set(hosts) == {"127.0.0.1"}  # the endpoint setting took: api.kaggle.com was never looked up
    dataset = kaggle.datasets["lab-bot/plate-reader-od600"]
    assert (dataset.title, dataset.licence, dataset.private) == ("Plate reader OD600", "CC0-1.0", True)
    assert dict(dataset.files) == {
        "plate-1/result.json": (source / "plate-1" / "result.json").read_bytes(),
        "plate-2.json": (source / "plate-2.json").read_bytes(),
    }
    receipts = result.outputs["receipts"]
    assert {r["destination"] for r in receipts} == {f"{kaggle.url}/datasets/lab-bot/plate-reader-od600"}
    assert sorted(r["bytes"] for r in receipts) == sorted(len(v) for v in dataset.files.values())
    assert all(r["version"] is None for r in receipts)  # Kaggle's create response states no version number
    assert list(spool.iterdir()) == []


def test_an_existing_dataset_gets_a_new_version_noted_with_the_run_key(kaggle: KaggleServer, source: Path, spool: Path):
    kaggle.add_dataset("lab-bot/plate-reader-od600", "Plate reader OD600", {"old.csv": b"a,b\n"})
    result = run([str(source / "plate-2.json")], destination(kaggle), spool)
    assert result.status == 200, result.message
    dataset = kaggle.datasets["lab-bot/plate-reader-od600"]
    assert [v.number for v in dataset.versions] == [1, 2]
    assert dataset.versions[-1].notes == "Relay push push-7: 1 object(s)"
    assert dict(dataset.files) == {"plate-2.json": (source / "plate-2.json").read_bytes()}  # a snapshot
    assert [r.path.rsplit("/", 1)[-1] for r in kaggle.requests] == [
        "GetDatasetStatus",
        "StartBlobUpload",
        "blob-1",
        "CreateDatasetVersion",
    ]


def test_version_notes_given_as_an_option_are_used(kaggle: KaggleServer, source: Path, spool: Path):
    kaggle.add_dataset("lab-bot/plate-reader-od600", "Plate reader OD600", {"old.csv": b"a,b\n"})
    result = run([str(source / "plate-2.json")], destination(kaggle, version_notes="Week 47 plates"), spool)
    assert result.status == 200, result.message
    assert kaggle.datasets["lab-bot/plate-reader-od600"].versions[-1].notes == "Week 47 plates"


def test_a_refused_create_fails_the_step(kaggle: KaggleServer, source: Path, spool: Path):
    refusal = {"status": "error", "error": "The requested title is already in use"}
    kaggle.fail_next(1, 200, body=refusal, path_prefix="/v1/datasets.DatasetApiService/CreateDataset")
    result = run([f"{source}/"], destination(kaggle), spool)
    assert result.status == 502
    assert "Kaggle refused the dataset (its status and error not shown)" in result.message
    assert "already in use" not in result.message  # Kaggle's own text is not recorded
    assert kaggle.datasets == {}
    assert list(spool.iterdir()) == []


def test_a_server_error_on_create_fails_the_step_without_the_key(kaggle: KaggleServer, source: Path, spool: Path):
    kaggle.fail_next(1, 500, path_prefix="/v1/datasets.DatasetApiService/CreateDataset")
    result = run([f"{source}/"], destination(kaggle), spool)
    assert result.status == 502 and "Kaggle create failed" in result.message
    assert KEY not in result.message and KEY not in json.dumps(result.outputs)
    assert list(spool.iterdir()) == []


def test_a_wrong_key_is_a_401_before_any_byte_is_spooled(kaggle: KaggleServer, source: Path, spool: Path):
    result = run([f"{source}/"], destination(kaggle), spool, secrets={"RELAY_SECRET_KAGGLE_KEY": "wrong-" + KEY})
    assert result.status == 401 and "Kaggle dataset status failed: HTTP 401 Unauthorized" in result.message
    assert "Unauthenticated" not in result.message  # Kaggle's own text is not recorded
    assert KEY not in result.message and "wrong-" not in result.message
    assert kaggle.requests_to("/v1/blobs.") == [] and kaggle.datasets == {}
    assert list(spool.iterdir()) == []


def test_the_configured_key_wins_over_an_ambient_kaggle_token(
    kaggle: KaggleServer, source: Path, spool: Path, monkeypatch: pytest.MonkeyPatch
):
    # kagglesdk on its own would prefer this token (as a bearer) to the username and key it is given.
    monkeypatch.setenv("KAGGLE_API_TOKEN", "ambient-token-of-someone-else")
    result = run([f"{source}/"], destination(kaggle), spool)
    assert result.status == 200, result.message
    assert {(r.header("Authorization") or "")[:6] for r in kaggle.requests_to("/v1/")} == {"Basic "}


def test_a_new_dataset_without_title_or_licence_fails_fast(kaggle: KaggleServer, source: Path, spool: Path):
    config = destination(kaggle)
    del config["licence"]
    result = run([f"{source}/"], config, spool)
    assert result.status == 400 and "creating it needs destination.title and .licence" in result.message
    assert kaggle.requests_to("/v1/blobs.") == []


def test_a_hash_stated_by_storage_that_differs_fails_the_push(kaggle: KaggleServer, source: Path, spool: Path):
    kaggle.misstate_hashes = True
    result = run([f"{source}/"], destination(kaggle), spool)
    assert result.status == 502 and "arrived with crc32c=" in result.message
    assert kaggle.datasets == {}


def test_the_spool_is_private_holds_only_data_and_is_removed(kaggle: KaggleServer, spool: Path):
    adapter = KaggleDestination.from_options(
        {key: value for key, value in destination(kaggle).items() if key != "kind"} | {"key": KEY},
        temp_root=str(spool),
        egress=LOOPBACK,
    )
    data = b'{"od600": [0.4]}'
    item = SourceObject("file:///data/plate-3.json", "plate-3.json", len(data), of_bytes(data))
    assert adapter.check(item, item.checksums) is Presence.ABSENT
    adapter.send(item, HashingReader(io.BytesIO(data)), overwrite=False)
    (folder,) = spool.iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (spooled,) = folder.iterdir()
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600 and spooled.read_bytes() == data
    receipts = adapter.close("Relay push push-8: 1 object(s)")
    assert [r.destination for r in receipts] == [f"{kaggle.url}/datasets/lab-bot/plate-reader-od600"]
    assert list(spool.iterdir()) == []
    assert Path.cwd().joinpath("dataset-metadata.json").exists() is False


def test_no_version_is_published_when_an_object_failed(kaggle: KaggleServer, spool: Path):
    adapter = KaggleDestination(
        "lab-bot/plate-reader-od600",
        username="lab-bot",
        key=KEY,
        endpoint=kaggle.url,
        temp_root=str(spool),
        egress=LOOPBACK,
    )
    kaggle.add_dataset("lab-bot/plate-reader-od600", "Plate reader OD600", {"old.csv": b"a,b\n"})
    good, bad = b"[1]", b"[2]"
    adapter.send(
        SourceObject("file:///a.json", "a.json", len(good), of_bytes(good)),
        HashingReader(io.BytesIO(good)),
        overwrite=False,
    )
    with pytest.raises(StepError, match="changed or corrupted in transit"):
        item = SourceObject("file:///b.json", "b.json", len(bad), of_bytes(b"[3]"))
        adapter.send(item, HashingReader(io.BytesIO(bad)), overwrite=False)
    with pytest.raises(StepError, match="no version published: 1 object") as failure:
        adapter.close("Relay push push-9: 1 object(s)")
    assert failure.value.status == 424
    assert len(kaggle.datasets["lab-bot/plate-reader-od600"].versions) == 1
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"dataset": "plate-reader"}, "destination.dataset: expected owner/slug"),
        ({"endpoint": "ftp://kaggle.example"}, "destination.endpoint: expected an http(s) URL"),
        # The key goes with every request: plain http only to this machine, as for every destination.
        ({"endpoint": "http://kaggle.lab.example"}, "destination.endpoint: expected https:// (plain http only to"),
        ({"public": "yes"}, "destination.public: expected true or false"),
        ({"key": ""}, "destination.key: expected a non-empty string"),
    ],
)
def test_bad_options(options: dict[str, Any], fragment: str):
    base = {"dataset": "lab-bot/plate-reader-od600", "username": "lab-bot", "key": KEY}
    with pytest.raises(StepError, match=re.escape(fragment)) as failure:
        KaggleDestination.from_options(base | options)
    assert failure.value.status == 400


def test_a_document_failing_before_it_is_sent_also_stops_the_version(kaggle: KaggleServer, source: Path, spool: Path):
    (source / "notes.json").write_text(json.dumps({"other": 1}))  # no /extra_data: refused by select, never sent
    result = run([f"{source}/"], destination(kaggle), spool, select="/extra_data")
    assert result.status == 424 and "no version published: 1 object(s) of this push failed" in result.message
    assert kaggle.datasets == {}


def test_by_default_a_loopback_api_is_refused_before_the_key_is_sent(kaggle: KaggleServer, source: Path, spool: Path):
    result = run([f"{source}/"], destination(kaggle), spool, egress=Egress())  # a deployed pipeline's default
    assert result.status == 403 and "127.0.0.1 is a loopback address: refused unless" in result.message
    assert kaggle.requests == [] and kaggle.datasets == {}


def test_a_blob_upload_url_is_checked_like_the_api(kaggle: KaggleServer, source: Path, spool: Path):
    """The upload URL comes from the API's answer: a private one is refused, the bytes stay home."""
    only_api = Egress(("localhost",), resolver=lambda host, port: ["127.0.0.1"])
    config = destination(kaggle, endpoint=kaggle.url.replace("127.0.0.1", "localhost"))
    result = run([f"{source}/"], config, spool, egress=only_api)
    assert result.status == 403 and "127.0.0.1 is a loopback address" in result.message
    assert kaggle.requests_to("/v1/blobs.BlobApiService/StartBlobUpload") and kaggle.requests_to("/upload/") == []
    assert kaggle.datasets == {}
