"""Local sources from the attacker's side: an assay trigger author who can write in assay's folder, and wants
imaging's file at the LIMS.

The race tests run the real push step with a real two-tenant policy against a loopback LIMS, while another process
(not a thread: no interpreter lock to take turns with) swaps, atomically and without pause, a file or a folder of
assay's with a symbolic link to imaging's. Each push is an attempt; nothing is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.push import push
from relay.secrets import LocalSecrets
from tests.policies import gate
from tests.servers.lims import LimsServer

TOKEN = "Bearer lims-t0ken"
OWN = b"assay-own,00000\n"
SECRET = b"imaging-ONLY,42\n"  # as long as OWN: a size check alone would not tell them apart
ATTEMPTS = 1500

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


def push_as_assay(lab: Lab, lims: LimsServer, sources: list[str]) -> StepResult:
    """The real push step, as the assay tenant's trigger asks for it, under the deployment's policy."""
    spec = spec_for(
        inputs={"sources": sources},
        outputs={},
        parameters={
            "tenant": "assay",
            "run_key": "attempt",
            "overwrite": True,  # each attempt a fresh upload: a LIMS that already has the name refuses a second
            "destination": {
                "kind": "http",
                "url": f"{lims.url}/files/{{name}}",
                "method": "PUT",
                "headers": {"Authorization": "secret://lims-token"},
            },
        },
    )
    context = StepContext(
        resolver=LocalSecrets(env={"RELAY_SECRET_LIMS_TOKEN": TOKEN}), gate=gate(policy(lab, lims), local=True)
    )
    return run_step(push, spec, context)


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


@pytest.mark.parametrize(
    "swapped",
    [
        "a link to a file of assay's and a link to imaging's file",
        "a folder of assay's and a link to imaging's folder",
    ],
)
def test_a_source_swapped_with_a_link_never_sends_another_tenants_bytes(
    lab: Lab, lims: LimsServer, flipper: FlipperStarter, swapped: str
):
    (lab.assay / "own.csv").write_bytes(OWN)
    if swapped.startswith("a folder"):
        (lab.assay / "run").mkdir()
        (lab.assay / "run" / "plate.csv").write_bytes(OWN)
        (lab.staging / "run").symlink_to(lab.imaging / "run")
        pair, sources = (lab.assay / "run", lab.staging / "run"), [f"{lab.assay.as_uri()}/run/"]
    else:
        (lab.assay / "plate.csv").symlink_to(lab.assay / "own.csv")  # inside: today's check lets it pass
        (lab.staging / "plate.csv").symlink_to(lab.imaging / "secret.csv")
        pair, sources = (lab.assay / "plate.csv", lab.staging / "plate.csv"), [(lab.assay / "plate.csv").as_uri()]
    flipper(*pair)

    results = []
    for _ in range(ATTEMPTS):
        results.append(push_as_assay(lab, lims, sources))
        if leaked(lims):
            break
    assert not leaked(lims), f"imaging's bytes reached the LIMS after {len(results)} attempt(s)"
    refusals = [r.message for r in results if r.status == 403]
    assert refusals and all("symbolic link" in m for m in refusals), refusals[:3]
    assert all(r.status in (200, 403) for r in results), {r.message for r in results if r.status not in (200, 403)}
    assert all(json.dumps(r.to_json()).count(SECRET.decode()) == 0 for r in results)
