"""The huggingface destination through huggingface_hub against a loopback Hub: one commit per push, and failures."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, spec_for
from pipelines.steps.destinations import Destination
from pipelines.steps.destinations.huggingface import HuggingFaceDestination
from pipelines.steps.egress import Egress, EgressError
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.pipelines.destinations import hosts_contacted
from tests.policies import TrustingGate
from tests.servers.hub import HubServer

# huggingface_hub reads its switches once, when first imported (the adapter imports it lazily, after this). Without
# telemetry, it does not fetch an agent registry from huggingface.co to build its User-Agent; without Xet, no LFS
# file could go to Xet storage (this Hub asks for none: every file is "regular"). HF_HUB_OFFLINE must stay unset: it
# refuses every request, the upload included (see the last test).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

TOKEN = "hf_canary_5e1f0c7d2b9a"  # distinctive, so a leak into any message is found
SECRETS = {"RELAY_SECRET_HF_TOKEN": TOKEN}
REPO = "lab-bot/plate-reader"
LOOPBACK = Egress.loopback()  # the Hub here listens on 127.0.0.1, which deployed pipelines refuse


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(token=TOKEN) as server:
        yield server
        assert server.errors == []


def destination(server: HubServer, **options: Any) -> dict[str, Any]:
    return {"kind": "huggingface", "repo": REPO, "token": "secret://hf-token", "endpoint": server.url, **options}


def run(
    sources: list[str],
    config: Mapping[str, Any],
    spool: Path,
    secrets: Mapping[str, str] = SECRETS,
    egress: Egress = LOOPBACK,
    **parameters: Any,
) -> StepResult:
    """The push step itself, not `run_step`: its redaction would hide a token the adapter leaked into a message."""

    def factory(options: Mapping[str, Any]) -> Destination:
        return HuggingFaceDestination.from_options(options, temp_root=str(spool), egress=egress)

    spec = spec_for(
        inputs={"sources": sources}, outputs={}, parameters={"destination": config, "run_key": "push-7", **parameters}
    )
    context = StepContext(resolver=LocalSecrets(env=secrets), gate=TrustingGate())
    return push(spec, context, factories={"huggingface": factory})


def commits_to(hub: HubServer, branch: str = "main") -> list[str]:
    return [r.path for r in hub.requests_to(f"/api/datasets/{REPO}/commit/{branch}", "POST")]


def test_one_commit_holds_every_object_and_names_the_run_key(hub: HubServer, source: Path, spool: Path):
    base = hub.add_repo(REPO, {"README.md": b"# Plate reader\n"})
    environ = dict(os.environ)
    with hosts_contacted() as hosts:
        result = run([f"{source}/"], destination(hub, path_in_repo="runs/w47"), spool)
    assert result.status == 200, result.message
    assert set(hosts) == {"127.0.0.1"}  # neither huggingface.co nor any Xet service
    assert dict(os.environ) == environ
    assert len(commits_to(hub)) == 1
    head = hub.repos[REPO].head()
    assert (head.parent, head.summary) == (base, "Relay push push-7: 2 object(s)")
    assert dict(head.files) == {
        "README.md": b"# Plate reader\n",
        "runs/w47/plate-1/result.json": (source / "plate-1" / "result.json").read_bytes(),
        "runs/w47/plate-2.json": (source / "plate-2.json").read_bytes(),
    }
    receipts = {r["destination"]: r for r in result.outputs["receipts"]}
    assert set(receipts) == {
        f"{hub.url}/datasets/{REPO}/blob/main/runs/w47/plate-1/result.json",
        f"{hub.url}/datasets/{REPO}/blob/main/runs/w47/plate-2.json",
    }
    assert {r["version"] for r in receipts.values()} == {head.sha}
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    assert list(spool.iterdir()) == []


def test_a_wrong_token_is_a_401_without_the_token_in_the_message(hub: HubServer, source: Path, spool: Path):
    hub.add_repo(REPO, {})
    result = run([f"{source}/"], destination(hub), spool, secrets={"RELAY_SECRET_HF_TOKEN": "hf_wrong_" + TOKEN})
    assert (
        result.status == 401
        and "looking up the repository failed: HTTP 401 Unauthorized: the token was refused" in (result.message)
    )
    assert "Invalid credentials" not in result.message  # the Hub's own text is not recorded
    assert TOKEN not in result.message and TOKEN not in json.dumps(result.outputs)
    assert commits_to(hub) == [] and list(spool.iterdir()) == []
    assert len(hub.requests) == 1  # the first object's look-up; the second fails on what the first learnt


def test_a_rerun_skips_the_same_files_and_never_replaces_a_different_one(hub: HubServer, source: Path, spool: Path):
    hub.add_repo(REPO, {})
    assert run([f"{source}/"], destination(hub), spool).status == 200
    again = run([f"{source}/"], destination(hub), spool)
    assert again.status == 200 and again.metrics["skipped"] == 2 and len(commits_to(hub)) == 1
    (source / "plate-2.json").write_text(json.dumps({"extra_data": {"od600": [0.9]}}))  # same size, other bytes
    changed = run([f"{source}/"], destination(hub), spool)
    assert changed.status == 409 and "a different plate-2.json is at" in changed.message
    assert len(commits_to(hub)) == 1
    (source / "plate-2.json").write_text(json.dumps({"extra_data": {"od600": [0.95]}}))  # another size: no read
    resized = run([f"{source}/"], destination(hub), spool)
    assert resized.status == 409 and "a different plate-2.json is at the destination" in resized.message
    forced = run([f"{source}/"], destination(hub), spool, overwrite=True)
    assert forced.status == 200 and len(commits_to(hub)) == 2
    assert hub.repos[REPO].head().files["plate-2.json"] == (source / "plate-2.json").read_bytes()
    assert list(spool.iterdir()) == []


def test_a_missing_repository_is_made_only_when_asked(hub: HubServer, source: Path, spool: Path):
    refused = run([f"{source}/"], destination(hub), spool)
    assert refused.status == 404 and "set destination.create to make it" in refused.message
    assert hub.repos == {}
    created = run([f"{source}/"], destination(hub, create=True), spool)
    assert created.status == 200, created.message
    repo = hub.repos[REPO]
    assert repo.private and sorted(repo.head().files) == [".gitattributes", "plate-1/result.json", "plate-2.json"]


def test_a_push_to_a_branch_leaves_main_alone(hub: HubServer, source: Path, spool: Path):
    base = hub.add_repo(REPO, {}, branches=("main", "staging"))
    result = run([str(source / "plate-2.json")], destination(hub, revision="staging"), spool)
    assert result.status == 200, result.message
    repo = hub.repos[REPO]
    assert repo.branches["main"] == base and repo.head("staging").parent == base
    assert len(commits_to(hub, "staging")) == 1


def test_a_commit_made_meanwhile_fails_the_push(hub: HubServer, source: Path, spool: Path):
    hub.add_repo(REPO, {})
    adapter = HuggingFaceDestination(REPO, TOKEN, endpoint=hub.url, temp_root=str(spool), egress=LOOPBACK)
    data = (source / "plate-2.json").read_bytes()
    item = SourceObject("file:///plate-2.json", "plate-2.json", len(data), of_bytes(data))
    adapter.check(item, item.checksums)
    with (source / "plate-2.json").open("rb") as stream:
        adapter.send(item, HashingReader(stream), overwrite=False)
    (spooled,) = next(spool.iterdir()).iterdir()
    assert stat.S_IMODE(spooled.parent.stat().st_mode) == 0o700 and stat.S_IMODE(spooled.stat().st_mode) == 0o600
    hub.add_commit(REPO, {"plate-2.json": b"written by somebody else"})
    expected = "commit failed: HTTP 412 Precondition Failed: a commit has happened since the repository was looked at"
    with pytest.raises(StepError, match=expected) as failure:
        adapter.close("Relay push push-8: 1 object(s)")
    assert failure.value.status == 412
    assert hub.repos[REPO].head().files["plate-2.json"] == b"written by somebody else"
    assert list(spool.iterdir()) == []


def test_hf_hub_offline_refuses_the_upload(hub: HubServer, source: Path, spool: Path):
    """A subprocess: the switch is read when huggingface_hub is first imported."""
    script = (
        "import sys\n"
        "from pipelines.steps.destinations.huggingface import HuggingFaceDestination\n"
        "from pipelines.steps.errors import StepError\n"
        "from pipelines.steps.objects import SourceObject\n"
        "from pipelines.steps.checksums import Checksums\n"
        "from pipelines.steps.egress import Egress\n"
        "adapter = HuggingFaceDestination(sys.argv[1], sys.argv[2], endpoint=sys.argv[3], egress=Egress.loopback())\n"
        "try:\n"
        "    adapter.check(SourceObject('file:///x', 'x', 1, Checksums()), Checksums())\n"
        "except StepError as error:\n"
        "    print(error.status, error)\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(["functions", "."])}
    done = subprocess.run(
        [sys.executable, "-c", script, REPO, TOKEN, hub.url],
        capture_output=True,
        text=True,
        env=environment,
        cwd=Path(__file__).parents[3],
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("503 ") and "HF_HUB_OFFLINE is set" in done.stdout, done.stderr
    assert hub.requests == []


def test_receipts_on_the_public_hub_are_hf_uris():
    assert HuggingFaceDestination(REPO, TOKEN).destination("runs/a.json") == f"hf://datasets/{REPO}/runs/a.json"
    on_a_pr = HuggingFaceDestination(REPO, TOKEN, revision="refs/pr/1")
    assert on_a_pr.destination("a.json") == f"hf://datasets/{REPO}@refs%2Fpr%2F1/a.json"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"repo": "plate-reader"}, "destination.repo: expected owner/name"),
        ({"endpoint": "ftp://hub.example"}, "destination.endpoint: expected an http(s) URL"),
        # The token goes with every request: plain http only to this machine, as for every destination.
        ({"endpoint": "http://hub.lab.example"}, "destination.endpoint: expected https:// (plain http only to"),
        ({"create": "yes"}, "destination.create: expected true or false"),
        ({"token": ""}, "destination.token: expected a non-empty string"),
    ],
)
def test_bad_options(options: dict[str, Any], fragment: str):
    with pytest.raises(StepError) as failure:
        HuggingFaceDestination.from_options({"repo": REPO, "token": TOKEN} | options)
    assert failure.value.status == 400 and fragment in str(failure.value)


def test_by_default_a_loopback_hub_is_refused_before_the_token_is_sent(hub: HubServer, source: Path, spool: Path):
    hub.add_repo(REPO, {})
    result = run([f"{source}/"], destination(hub), spool, egress=Egress())  # a deployed pipeline's default
    assert result.status == 403 and "127.0.0.1 is a loopback address: refused unless" in result.message
    assert hub.requests == [] and list(spool.iterdir()) == []


@pytest.mark.parametrize(
    "endpoint", ["https://169.254.169.254", "https://metadata.google.internal", "https://10.1.2.3"]
)
def test_by_default_a_private_endpoint_is_refused(endpoint: str):
    adapter = HuggingFaceDestination(REPO, TOKEN, endpoint=endpoint)
    item = SourceObject("file:///x", "x", 1, of_bytes(b"x"))
    with pytest.raises(EgressError, match="refused unless the deployment's policy allows it"):
        adapter.check(item, item.checksums)
