"""The hashed requirement locks (`make lock`): complete, hashed, in step with their inputs and with each other, and
made for the Python the code deploys on. Text only: no index is asked, so a stale lock fails here offline."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.support import DEPLOY, ROOT, TERRAFORM

# Each lock and the human-edited input it is generated from.
LOCKS = {
    ROOT / "functions" / "requirements.txt": ROOT / "functions" / "requirements.in",
    ROOT / "pipelines" / "requirements.txt": ROOT / "pipelines" / "requirements.in",
    ROOT / "requirements.txt": ROOT / "requirements.in",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def name(raw: str) -> str:
    """PEP 503's normalized name: what pip compares."""
    return re.sub(r"[-_.]+", "-", raw).lower()


@dataclass
class Entry:
    version: str
    hashes: int
    via: list[str] = field(default_factory=list)


@dataclass
class Lock:
    options: list[str]
    entries: dict[str, Entry]
    problems: list[str]


def read_lock(text: str) -> Lock:
    """Options, pinned entries (with their hashes and uv's `# via` notes) and lines that are neither."""
    lock = Lock([], {}, [])
    current: Entry | None = None
    logical = re.sub(r"\\\n\s*", " ", text)
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            via = re.fullmatch(r"#\s+(?:via\s+)?(\S.*)", stripped)
            if current is not None and via and via.group(1) != "via":
                current.via.append(via.group(1).strip())
            continue
        if stripped.startswith("-"):
            lock.options.append(stripped)
            current = None
            continue
        pin = _PIN.match(stripped)
        if pin is None:
            lock.problems.append(f"not a pinned requirement: {stripped[:80]}")
            current = None
            continue
        key = name(pin.group(1))
        if key in lock.entries:
            lock.problems.append(f"{key} is locked twice")
        current = lock.entries[key] = Entry(pin.group(3), len(_HASH.findall(stripped)))
    return lock


def read_input(path: Path) -> dict[str, str]:
    """The pins of a requirements.in, with those of the files it includes (-r), by normalized name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(read_input(path.parent / line[3:].strip()))
        elif line:
            pin = _PIN.match(line)
            assert pin, f"{path}: every input is pinned exactly: {line}"
            pins[name(pin.group(1))] = pin.group(3)
    return pins


def stale(lock: Lock, lock_path: Path, input_path: Path) -> list[str]:
    """What shows a lock was not regenerated after its input changed."""
    problems = []
    pins = read_input(input_path)
    for package, version in sorted(pins.items()):
        if package not in lock.entries:
            problems.append(f"{package}=={version} is in {input_path.name} but not locked")
        elif lock.entries[package].version != version:
            problems.append(f"{package}: {input_path.name} pins {version}, the lock {lock.entries[package].version}")
    for package, entry in sorted(lock.entries.items()):
        if not [reason for reason in entry.via if not reason.startswith("-c ")]:
            problems.append(f"{package}: the lock does not say what needs it")
        for reason in entry.via:
            if reason.startswith("-c "):
                continue  # held to another lock's version: that says nothing about why it is here
            if reason.startswith("-r "):
                # Locked because an input asked for it: that input must still ask.
                source = (ROOT / reason[3:]).resolve()
                if package not in read_input(source):
                    problems.append(f"{package} is locked for {reason[3:]}, which no longer names it")
            elif name(reason) not in lock.entries:
                problems.append(f"{package} is locked for {reason}, which is not locked itself")
    return problems


@pytest.fixture(scope="module", params=sorted(LOCKS), ids=lambda p: str(p.relative_to(ROOT)))
def lock_path(request: pytest.FixtureRequest) -> Path:
    return request.param  # type: ignore[no-any-return]


def test_the_lock_starts_by_requiring_hashes(lock_path: Path):
    # The functions buildpack runs plain `pip install -r` (uv from Python 3.14 on, which skips unhashed lines
    # unless told otherwise): the file itself must turn hash checking on.
    first = next(line for line in lock_path.read_text().splitlines() if line.strip())
    assert first == "--require-hashes"
    assert read_lock(lock_path.read_text()).options == ["--require-hashes"], "no index or include options"


def test_every_locked_package_is_pinned_and_hashed(lock_path: Path):
    lock = read_lock(lock_path.read_text())
    assert not lock.problems, lock.problems
    assert lock.entries
    unhashed = [package for package, entry in lock.entries.items() if entry.hashes == 0]
    assert not unhashed, unhashed


def test_the_lock_is_in_step_with_its_input(lock_path: Path):
    lock = read_lock(lock_path.read_text())
    assert not stale(lock, lock_path, LOCKS[lock_path]), "run `make lock`"


def test_a_stale_lock_is_noticed(tmp_path: Path):
    lock_path = ROOT / "functions" / "requirements.txt"
    lock = read_lock(lock_path.read_text())
    original = (ROOT / "functions" / "requirements.in").read_text()
    bumped = tmp_path / "bumped.in"
    bumped.write_text(original.replace("requests==2.33.0", "requests==2.34.0"))
    assert stale(lock, lock_path, bumped) == ["requests: bumped.in pins 2.34.0, the lock 2.33.0"]
    added = tmp_path / "added.in"
    added.write_text(original + "left-pad==1.0.0\n")
    assert stale(lock, lock_path, added) == ["left-pad==1.0.0 is in added.in but not locked"]
    # A dependency dropped from the input but left in the lock.
    extra = "left-pad==1.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via -r functions/requirements.in\n"
    orphan = read_lock(lock_path.read_text() + extra)
    assert stale(orphan, lock_path, ROOT / "functions" / "requirements.in") == [
        "left-pad is locked for functions/requirements.in, which no longer names it"
    ]
    assert read_lock("requests>=2\n").problems == ["not a pinned requirement: requests>=2"]


def test_the_function_upload_hashes_its_own_functions_framework():
    """Missing from the lock, the buildpack would install its own, unhashed copy."""
    lock = read_lock((ROOT / "functions" / "requirements.txt").read_text())
    assert lock.entries["functions-framework"].hashes > 0


def test_the_functions_the_image_and_the_developers_run_the_same_versions():
    functions, pipelines, developers = (read_lock(path.read_text()).entries for path in LOCKS)
    for narrower, wider, what in ((functions, pipelines, "the steps image"), (pipelines, developers, "the venv")):
        differ = {p: (e.version, wider[p].version if p in wider else None) for p, e in narrower.items()
                  if p not in wider or wider[p].version != e.version}  # fmt: skip
        assert not differ, f"{what} differs: {differ}"


def test_the_locks_are_made_for_the_python_that_runs_them():
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"--python-version (\d+)\.(\d+)", makefile)
    assert version and re.search(r"--python-platform x86_64-manylinux_\d+_\d+", makefile)
    runtime = f"python{version.group(1)}{version.group(2)}"
    assert re.search(rf"^RUNTIME={runtime}$", DEPLOY.read_text(), re.M)
    assert f'default     = "{runtime}"' in (TERRAFORM / "variables.tf").read_text()
    dockerfile = (ROOT / "pipelines" / "Dockerfile").read_text()
    assert re.search(rf"^FROM python:{version.group(1)}\.{version.group(2)}[.-]", dockerfile, re.M)
    for lock_path in LOCKS:
        assert "#    make lock" in lock_path.read_text(), f"{lock_path}: regenerate with make lock"


def test_the_venv_installs_the_lock_exactly():
    recipe = re.search(r"^\$\(STAMP\):.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe
    install = [line for line in recipe.group(1).splitlines() if "-r requirements.txt" in line]
    assert install and all("--require-hashes" in line and "--no-deps" in line for line in install)
    assert "pip check" in recipe.group(1)
