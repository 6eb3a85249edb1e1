"""The installed Google Cloud CLI, run with a throwaway configuration: no account, no network, no prompts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("gcloud_driver.py")
PROJECT = "demo-project"

# How gcloud says it could not parse the command line (calliope's argparse errors, exit code 2).
_ARGUMENT_ERRORS = ("unrecognized arguments", "Invalid choice", "argument ", "must be specified", "Invalid value")
# How it says it parsed the command and then found no one to act as: the expected end here.
_NO_CREDENTIALS = ("You do not currently have an active account selected",)


def sdk_root() -> Path:
    found = shutil.which("gcloud")
    if found is None:
        message = "the Google Cloud CLI is not installed (it is on this project's machines; apt: google-cloud-cli)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(found).resolve().parents[1]


def sdk_python(root: Path) -> str:
    """The interpreter bin/gcloud itself picks: CLOUDSDK_PYTHON, else the bundled one, else python3."""
    bundled = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    return os.environ.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else "python3")


@contextmanager
def offline_config() -> Iterator[dict[str, str]]:
    """Environment for gcloud with its own empty configuration, a project, and every way out closed.

    No account means commands stop before any request; the proxy on a closed loopback port catches anything that
    would still try. gcloud also asks whether it runs on Compute Engine (a DNS query for the metadata server) unless
    check_gce_metadata is off and its on-disk answer, the file `gce` in the configuration, already says no.
    """
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        (Path(config) / "gce").write_text("False")
        env = {name: value for name, value in os.environ.items() if not name.startswith(("CLOUDSDK_", "GOOGLE_"))}
        env.update(
            CLOUDSDK_CONFIG=config,
            CLOUDSDK_CORE_PROJECT=PROJECT,
            CLOUDSDK_CORE_DISABLE_PROMPTS="1",
            CLOUDSDK_CORE_CHECK_GCE_METADATA="false",
            CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
            CLOUDSDK_CORE_DISABLE_FILE_LOGGING="true",
            CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true",
            CLOUDSDK_PROXY_TYPE="http",
            CLOUDSDK_PROXY_ADDRESS="127.0.0.1",
            CLOUDSDK_PROXY_PORT="9",
        )
        if "CLOUDSDK_PYTHON" in os.environ:
            env["CLOUDSDK_PYTHON"] = os.environ["CLOUDSDK_PYTHON"]
        yield env


@dataclass(frozen=True)
class Verdict:
    argv: tuple[str, ...]
    code: int | str
    output: str

    @property
    def argument_error(self) -> bool:
        return self.code == 2 and any(marker in self.output for marker in _ARGUMENT_ERRORS)

    @property
    def parsed(self) -> bool:
        """The arguments parsed, and the command stopped where a command without credentials must."""
        return self.code == 1 and any(marker in self.output for marker in _NO_CREDENTIALS)

    def __str__(self) -> str:
        return f"gcloud {' '.join(self.argv)}\n  -> exit {self.code}: {self.output.strip()[-600:]}"


def parse_all(commands: Sequence[Sequence[str]]) -> list[Verdict]:
    """Each command, with --quiet, through the installed CLI's own parser (one process for all of them)."""
    root = sdk_root()
    argvs = [[*argv, "--quiet"] for argv in commands]
    with offline_config() as env:
        result = subprocess.run(
            [sdk_python(root), str(DRIVER), str(root), "parse"],
            input=json.dumps(argvs),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return [Verdict(tuple(item["argv"]), item["code"], item["output"]) for item in json.loads(result.stdout)]


def run_binary(argv: Sequence[str]) -> Verdict:
    """One command through the `gcloud` executable itself, to show the in-process driver judges as it does."""
    with offline_config() as env:
        result = subprocess.run(
            ["gcloud", *argv, "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    return Verdict(tuple(argv), result.returncode, result.stdout + result.stderr)


def upload_of(directory: Path, runtime: str) -> subprocess.CompletedProcess[str]:
    """gcloud's own pre-upload checks on a --source folder; stdout lists the zip it would upload (JSON)."""
    root = sdk_root()
    with offline_config() as env:
        return subprocess.run(
            [sdk_python(root), str(DRIVER), str(root), "source", str(directory), runtime],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
