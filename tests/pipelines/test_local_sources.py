"""Local sources from the attacker's side: an assay trigger author who can write in assay's folder, and wants
imaging's files at the LIMS (push) or on the cluster (ratchet).

The race tests run the real push step with a real two-tenant policy against a loopback LIMS, while another process
(not a thread: no interpreter lock to take turns with) swaps, atomically and without pause, a file or a folder of
assay's with a symbolic link to imaging's. Each push is an attempt; nothing is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.localfile import Resolver, resolve_walking
from pipelines.steps.objects import FileObjects, ObjectStore
from pipelines.steps.push import push
from pipelines.steps.ratchet.step import ratchet
from relay import naming
from relay.secrets import LocalSecrets
from tests.launches import launch
from tests.pipelines.ratchet.support import EXAMPLE
from tests.policies import gate
from tests.servers.lims import LimsServer

TOKEN = "Bearer lims-t0ken"
OWN = b"assay-own,00000\n"
SECRET = b"imaging-ONLY,42\n"  # as long as OWN: a size check alone would not tell them apart
RUN_KEY = "attempt"
ATTEMPTS = 1000  # today's code sends imaging's bytes within a few hundred

# Swaps two names for ever with renameat2(RENAME_EXCHANGE): each name always exists, as a file, folder or link.
FLIPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (os.fsencode(p) for p in sys.argv[1:3])
AT_FDCWD, RENAME_EXCHANGE = -100, 2
print("ready", flush=True)
while True:
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
"""


@dataclass(frozen=True)
class Lab:
    root: Path
    assay: Path  # assay's allowed folder: the attacker writes here
    imaging: Path  # another tenant's folder: the attacker must never get these bytes sent
    staging: Path  # the attacker's own scratch space, outside both

    @property
    def results(self) -> Path:  # the deployment's results location: the functions' launch records are here
        return self.root / "results"

    @property
    def assay_sources(self) -> list[str]:
        return [f"{self.assay.as_uri()}/"]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    lab = Lab(tmp_path, tmp_path / "assay", tmp_path / "imaging", tmp_path / "staging")
    for folder in (lab.assay, lab.imaging / "run", lab.staging):
        folder.mkdir(parents=True)
    (lab.imaging / "secret.csv").write_bytes(SECRET)
    (lab.imaging / "run" / "plate.csv").write_bytes(SECRET)
    return lab


@pytest.fixture
def lims() -> Iterator[LimsServer]:
    with LimsServer(authorization=TOKEN) as server:
        yield server


def policy(lab: Lab, lims: LimsServer) -> str:
    """Two tenants on one machine, each with its own folder, both allowed the same LIMS."""
    tenants = ""
    for name in ("assay", "imaging"):
        tenants += (
            f"- name: {name}\n"
            f"  sources: ['{(lab.root / name).as_uri()}/']\n"
            f"  destinations: [{{id: lims, kind: http, url: '{lims.url}/files/'}}]\n"
            f"  secrets: [{{secret: 'secret://lims-token', to: lims, field: headers.Authorization}}]\n"
        )
    return "tenants:\n" + tenants


def push_as_assay(
    lab: Lab, lims: LimsServer, sources: list[str], stores: Mapping[str, ObjectStore] | None = None
) -> StepResult:
    """The real push step, for the run the functions launched as the assay tenant's trigger asked for it (each call
    an attempt of that run), under the deployment's policy."""
    parameters = {
        "overwrite": True,  # each attempt a fresh upload: a LIMS that already has the name refuses a second
        "destination": {
            "kind": "http",
            "url": f"{lims.url}/files/{{name}}",
            "method": "PUT",
            "headers": {"Authorization": "secret://lims-token"},
        },
    }
    if not Path(naming.launch_record(str(lab.results), RUN_KEY)).exists():
        launch(lab.results, "push", {"sources": sources, **parameters}, run_key=RUN_KEY, tenant="assay")
    spec = spec_for(
        inputs={"sources": sources}, outputs={}, parameters={**parameters, "tenant": "assay", "run_key": RUN_KEY}
    )
    context = StepContext(
        resolver=LocalSecrets(env={"RELAY_SECRET_LIMS_TOKEN": TOKEN}),
        gate=gate(policy(lab, lims), local=True, results=str(lab.results)),
    )
    return run_step(lambda s, c: push(s, c, stores=stores), spec, context)


def leaked(lims: LimsServer) -> bool:
    return any(SECRET in upload.data for upload in lims.uploads)


FlipperStarter = Callable[[Path, Path], None]


@pytest.fixture
def flipper() -> Iterator[FlipperStarter]:
    """Starts the attacker's swapping process; it runs until the test ends."""
    started: list[subprocess.Popen[str]] = []

    def start(a: Path, b: Path) -> None:
        process = subprocess.Popen([sys.executable, "-c", FLIPPER, str(a), str(b)], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"

    yield start
    for process in started:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


FILE = "a link to a file of assay's and a link to imaging's file"
FOLDER = "a folder of assay's and a link to imaging's folder"


# The step's own resolver (openat2 here), and the per-component walk it falls back to where folders on the way
# are what it must judge one by one (a link in the last component is the same O_NOFOLLOW open for both).
@pytest.mark.parametrize(
    ("swapped", "resolver"),
    [(FILE, None), (FOLDER, None), (FOLDER, resolve_walking)],
    ids=["file, openat2 where the kernel has it", "folder, openat2 where the kernel has it", "folder, walk"],
)
def test_a_source_swapped_with_a_link_never_sends_another_tenants_bytes(
    lab: Lab, lims: LimsServer, flipper: FlipperStarter, swapped: str, resolver: Resolver | None
):
    (lab.assay / "own.csv").write_bytes(OWN)
    if swapped == FOLDER:
        (lab.assay / "run").mkdir()
        (lab.assay / "run" / "plate.csv").write_bytes(OWN)
        (lab.staging / "run").symlink_to(lab.imaging / "run")
        pair, sources = (lab.assay / "run", lab.staging / "run"), [f"{lab.assay.as_uri()}/run/"]
    else:
        (lab.assay / "plate.csv").symlink_to(lab.assay / "own.csv")  # inside: a check of where it leads passes
        (lab.staging / "plate.csv").symlink_to(lab.imaging / "secret.csv")
        pair, sources = (lab.assay / "plate.csv", lab.staging / "plate.csv"), [(lab.assay / "plate.csv").as_uri()]
    # The step's own stores, or the same with the per-component walk the kernel's openat2 falls back to.
    stores = None if resolver is None else {"file": FileObjects(lab.assay_sources, resolver)}
    flipper(*pair)

    results = []
    for _ in range(ATTEMPTS):
        results.append(push_as_assay(lab, lims, sources, stores))
        if leaked(lims):
            break
    assert not leaked(lims), f"imaging's bytes reached the LIMS after {len(results)} attempt(s)"
    refusals = [r.message for r in results if r.status == 403]
    assert refusals and all("found a symbolic link" in m for m in refusals), refusals[:3]
    assert all(r.status in (200, 403) for r in results), {r.message for r in results if r.status not in (200, 403)}
    assert not any(SECRET.decode() in json.dumps(r.to_json()) for r in results)


def test_a_link_in_the_folder_is_refused_by_name_and_the_rest_is_sent(lab: Lab, lims: LimsServer):
    (lab.assay / "own.csv").write_bytes(OWN)
    (lab.assay / "alias.csv").symlink_to(lab.assay / "own.csv")  # leads inside: refused all the same
    (lab.assay / "other.csv").symlink_to(lab.imaging / "secret.csv")
    (lab.assay / "run").symlink_to(lab.imaging / "run")  # a linked folder
    result = push_as_assay(lab, lims, lab.assay_sources)
    assert result.status == 403 and result.message.startswith("sent 1 object(s) (16 bytes), 3 refused: ")
    for name in ("alias.csv", "other.csv", "run"):
        assert f"found a symbolic link at {lab.assay / name}" in result.message
    assert lims.files == {"own.csv": OWN}


def test_a_hard_link_to_another_tenants_file_is_refused(lab: Lab, lims: LimsServer):
    # No path shows where a second name leads; with fs.protected_hardlinks off, anyone who can see imaging's file
    # can name it in assay's folder, and a step that may read both would send it.
    os.link(lab.imaging / "secret.csv", lab.assay / "plate.csv")
    result = push_as_assay(lab, lims, [(lab.assay / "plate.csv").as_uri()])
    assert result.status == 403 and "expected a file with one name, found 2 hard links" in result.message
    assert lims.uploads == []


@pytest.mark.parametrize(
    "source",
    ["{assay}/../imaging/secret.csv", "{assay}/./own.csv", "{root}/imaging/secret.csv", "{assay}-old/own.csv"],
)
def test_paths_that_climb_or_lie_beside_the_folder_are_refused(lab: Lab, lims: LimsServer, source: str):
    (lab.assay / "own.csv").write_bytes(OWN)
    (lab.root / "assay-old").mkdir()
    (lab.root / "assay-old" / "own.csv").write_bytes(SECRET)
    result = push_as_assay(lab, lims, [source.format(assay=lab.assay.as_uri(), root=lab.root.as_uri())])
    assert result.status == 403 and "policy_denied" in result.message
    assert lims.uploads == []


def test_a_ratchet_data_file_that_links_to_another_tenants_file_never_reaches_the_cluster(tmp_path: Path):
    code, cluster, imaging = tmp_path / "assay-code", tmp_path / "cluster", tmp_path / "imaging"
    shutil.copytree(EXAMPLE, code)
    imaging.mkdir()
    (imaging / "words.txt").write_bytes(SECRET)
    stopwords = code / "data" / "tokenize" / "stopwords.txt"
    stopwords.unlink()
    stopwords.symlink_to(imaging / "words.txt")
    text = (
        "tenants:\n- name: assay\n"
        f"  code: ['{code.as_uri()}/']\n"
        f"  clusters: [{{kind: local, root: '{cluster.as_uri()}'}}]\n"
        f"- name: imaging\n  code: ['{imaging.as_uri()}/']\n"
    )
    results = tmp_path / "results"
    given = {
        "workflow": {"uri": (code / "workflow.json").as_uri()},
        "destination": {"kind": "local", "root": str(cluster)},
    }
    launch(results, "ratchet", given, run_key="linked", tenant="assay")  # what the functions launched
    spec = spec_for(
        inputs={}, outputs={}, parameters={**given, "results_uri": str(results), "run_key": "linked", "tenant": "assay"}
    )
    context = StepContext(resolver=LocalSecrets(env={}), gate=gate(text, local=True, results=str(results)))
    result = run_step(ratchet, spec, context)
    assert result.status >= 400
    assert f"found a symbolic link at {stopwords}" in result.outputs["algorithms"]["tokenize"]["error"]
    launched = Path(naming.launch_record(str(results), "linked"))  # the test's own: what the step wrote is the rest
    written = [p for p in (*cluster.rglob("*"), *results.rglob("*")) if p.is_file() and p != launched]
    assert written and not any(SECRET in p.read_bytes() for p in written)
