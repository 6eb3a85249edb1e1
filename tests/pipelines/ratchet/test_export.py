"""Export: generic names rewritten to a destination's, code read from folders, archives and single files."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from pipelines.steps.objects import default_stores
from pipelines.steps.ratchet.clusters.local import LocalCluster
from pipelines.steps.ratchet.export import CodeLimits, ExportError, code_location, export_algorithm
from pipelines.steps.ratchet.placeholders import called_algorithms, rewrite_text, rewrite_value
from pipelines.steps.ratchet.stages import prepare_algorithms
from pipelines.steps.ratchet.workflow import Algorithm, Workflow
from tests.pipelines.ratchet.support import REPO


class Names:
    def data_name(self, collection: str, path: str) -> str:
        return f"data://qa/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return f"algo://qa/{name}/{version or 'latest'}"


@pytest.mark.parametrize(
    ("text", "rewritten"),
    [
        ("data://.my/<algo>/model.bin", "data://qa/summarize/model.bin"),
        ('open("data://.my/shared/<algo>.txt")', 'open("data://qa/shared/summarize.txt")'),
        ("x = 'data://.my/c/a/b.csv', 'data://.my/c/d'", "x = 'data://qa/c/a/b.csv', 'data://qa/c/d'"),
        ('client.algo("algo://.my/tokenize/latestPrivate")', 'client.algo("algo://qa/tokenize/latestPrivate")'),
        ("algo://.my/tokenize", "algo://qa/tokenize/latest"),
        ("data://someone/c/f and algo://someone/a/1.0", "data://someone/c/f and algo://someone/a/1.0"),
        ("no placeholders <algo> here", "no placeholders <algo> here"),  # only inside data URIs
    ],
)
def test_rewrite_text(text: str, rewritten: str):
    assert rewrite_text(text, "summarize", Names()) == rewritten


def test_rewrite_value_walks_payloads_and_leaves_keys_and_numbers():
    payload = {"data://.my/<algo>/k": ["data://.my/<algo>/x", 3, {"n": "algo://.my/a"}], "flag": True}
    assert rewrite_value(payload, "s", Names()) == {
        "data://.my/<algo>/k": ["data://qa/s/x", 3, {"n": "algo://qa/a/latest"}],
        "flag": True,
    }


def test_called_algorithms_are_found_in_code():
    code = 'a = client.algo("algo://.my/tokenize/latestPrivate")\nb = "algo://.my/first_sentence"\nc = "algo://x/y"'
    assert called_algorithms(code) == {"tokenize", "first_sentence"}


def algorithm(name: str, code: str | None = None, data_files: tuple[str, ...] = ()) -> Algorithm:
    return Algorithm(name=name, code=code, data_files=data_files, environment="python3", test_payload=None)


@pytest.mark.parametrize(
    ("code", "location"),
    [
        (None, "gs://b/src/algorithms/tok/"),
        ("algorithms/tok/", "gs://b/src/algorithms/tok/"),
        ("data://.my/<algo>/tok.tar.gz", "gs://b/src/data/tok/tok.tar.gz"),
        ("s3://other/tok.tar.gz", "s3://other/tok.tar.gz"),
    ],
)
def test_where_code_is_read_from(code: str | None, location: str):
    assert code_location(algorithm("tok", code), "gs://b/src/") == location


def archive(tmp_path: Path, members: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    path = tmp_path / "data" / "tok" / "tok.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    path.write_bytes(buffer.getvalue())
    return path


def test_an_archive_is_unpacked_and_rewritten(tmp_path: Path):
    folder = tarfile.TarInfo("src")
    folder.type = tarfile.DIRTYPE
    files = {"./src/tok.py": b'DATA = "data://.my/<algo>/words.txt"\n', "model.bin": b"\xff\xfe.my"}
    archive(tmp_path, files, (folder,))
    (tmp_path / "data" / "tok" / "words.txt").write_text("a b")
    item = algorithm("tok", "data://.my/<algo>/tok.tar.gz", ("data://.my/<algo>/words.txt",))
    exported = export_algorithm(item, tmp_path.as_uri(), default_stores(), Names())
    files = {(f.kind, f.path): f for f in exported.files}
    assert set(files) == {("code", "src/tok.py"), ("code", "model.bin"), ("data", "words.txt")}
    assert files["code", "src/tok.py"].data == b'DATA = "data://qa/tok/words.txt"\n'
    assert files["code", "model.bin"].data == b"\xff\xfe.my"  # binary: copied as it is
    assert (files["data", "words.txt"].collection, files["data", "words.txt"].name) == (
        "tok",
        "data://qa/tok/words.txt",
    )
    assert [r["kind"] for r in exported.receipts] == ["code", "code", "data"]


def test_data_files_land_in_the_algorithms_collection_and_their_listed_names_follow(tmp_path: Path):
    (tmp_path / "algorithms" / "tok").mkdir(parents=True)
    (tmp_path / "algorithms" / "tok" / "tok.py").write_text(
        'A = "data://.my/artifacts/words.txt"\nB = "data://.my/<algo>/words.txt"\nC = "data://.my/artifacts/x.txt"\n'
    )
    (tmp_path / "data" / "artifacts").mkdir(parents=True)
    (tmp_path / "data" / "artifacts" / "words.txt").write_text("a b")
    item = algorithm("tok", None, ("data://.my/artifacts/words.txt",))
    exported = export_algorithm(item, tmp_path.as_uri(), default_stores(), Names())
    code, data = exported.files
    # Listed or in the seed's <algo> form, the file is where it landed; one the workflow does not send keeps its name.
    assert code.data == (
        b'A = "data://qa/tok/words.txt"\nB = "data://qa/tok/words.txt"\nC = "data://qa/artifacts/x.txt"\n'
    )
    assert (data.collection, data.path, data.name, data.data) == ("tok", "words.txt", "data://qa/tok/words.txt", b"a b")
    assert exported.receipts[-1]["source"].endswith("/data/artifacts/words.txt")


@pytest.mark.parametrize("member", ["../evil.py", "/abs/evil.py", "src/../../evil.py"])
def test_an_archive_that_would_write_outside_its_tree_is_refused(tmp_path: Path, member: str):
    archive(tmp_path, {"tok.py": b"", member: b"x"})
    with pytest.raises(ExportError, match="would land outside"):
        export_algorithm(algorithm("tok", "data://.my/<algo>/tok.tar.gz"), str(tmp_path), default_stores(), Names())


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "found"),
    [
        (special("passwd", tarfile.SYMTYPE, "/etc/passwd"), "a link at 'passwd'"),
        (special("up", tarfile.SYMTYPE, "../../.."), "a link at 'up'"),
        (special("again.py", tarfile.LNKTYPE, "tok.py"), "a link at 'again.py'"),
        (special("null", tarfile.CHRTYPE), "a device or pipe at 'null'"),
        (special("pipe", tarfile.FIFOTYPE), "a device or pipe at 'pipe'"),
    ],
)
def test_an_archive_holding_links_or_devices_is_refused(tmp_path: Path, member: tarfile.TarInfo, found: str):
    archive(tmp_path, {"tok.py": b"def apply(i):\n    return i\n"}, (member,))
    with pytest.raises(ExportError) as caught:
        export_algorithm(algorithm("tok", "data://.my/<algo>/tok.tar.gz"), str(tmp_path), default_stores(), Names())
    assert str(caught.value).endswith(f"tok.tar.gz: expected only files and folders, found {found}")


MiB = 1024 * 1024


def bomb(path: Path, members: int, total: int = 600 * MiB) -> None:
    """A gzipped tar of `members` files of zeros, `total` bytes in all, about a thousand times smaller.

    Built by hand in a second: after a full flush deflate starts afresh, so one compressed MiB of zeros is repeated.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)

    def chunk(data: bytes) -> bytes:
        return deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)

    zeros, crc, inflated = chunk(bytes(MiB)), 0, 0
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip: deflate, no name, no time
        for index in range(members):
            info = tarfile.TarInfo(f"f{index}.bin")
            info.size = total // members
            header = info.tobuf(tarfile.GNU_FORMAT)
            out.write(chunk(header))
            crc, inflated = zlib.crc32(header, crc), inflated + len(header)
            for _ in range(info.size // MiB):
                out.write(zeros)
                crc, inflated = zlib.crc32(bytes(MiB), crc), inflated + MiB
        end = bytes(1024)  # a tar's two empty blocks
        out.write(deflate.compress(end) + deflate.flush())
        out.write(struct.pack("<II", zlib.crc32(end, crc), (inflated + len(end)) & 0xFFFFFFFF))


# Exports the bomb in a fresh process, reporting the error, the time taken and the peak resident memory.
EXPORT_BOMB = """
import json, sys, time
from pipelines.steps.objects import default_stores
from pipelines.steps.ratchet.export import ExportError, export_algorithm
from pipelines.steps.ratchet.workflow import Algorithm

class Names:
    def data_name(self, collection, path): return f"data://qa/{collection}/{path}"
    def algo_name(self, name, version): return f"algo://qa/{name}"

started = time.monotonic()
bomb = Algorithm(name="tok", code="data://.my/<algo>/tok.tar.gz", data_files=(), environment="", test_payload=None)
try:
    export_algorithm(bomb, sys.argv[1], default_stores(), Names())
    error = ""
except ExportError as exc:
    error = str(exc)
# VmHWM starts afresh at exec; ru_maxrss would count the pages shared with the (large) forking test process.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "seconds": time.monotonic() - started, "peak": peak}))
"""


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        (1, "expected files of at most 33554432 bytes, f0.bin has 629145600"),  # seen in its header
        (600, "expected at most 200 bytes inflated per byte, found"),  # seen while inflating
    ],
)
def test_a_gzip_bomb_is_refused_quickly_and_never_held(tmp_path: Path, members: int, refusal: str):
    path = tmp_path / "data" / "tok" / "tok.tar.gz"
    path.parent.mkdir(parents=True)
    bomb(path, members)
    assert path.stat().st_size < 700 * 1024
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_BOMB, str(tmp_path)],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "functions")])},
    )
    outcome = json.loads(done.stdout)
    assert refusal in outcome["error"] and outcome["error"].startswith(f"{path.as_uri()}: ")
    assert outcome["seconds"] < 5
    assert outcome["peak"] < 200 * MiB  # the archive unpacked whole would take over 600 MiB


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        (CodeLimits(max_files=2), "expected at most 2 files of code, found more (c.py)"),
        (CodeLimits(max_file_bytes=3), "expected files of at most 3 bytes, b.py has 4"),
        (CodeLimits(max_bytes=4), "expected at most 4 bytes of code, found more by b.py"),
    ],
)
@pytest.mark.parametrize("packed", [False, True])
def test_code_over_its_limits_is_refused_as_a_folder_or_an_archive(
    tmp_path: Path, limits: CodeLimits, refusal: str, packed: bool
):
    files = {"a.py": b"1", "b.py": b"2222", "c.py": b"33"}
    if packed:
        archive(tmp_path, files)
    for name, data in files.items():
        (tmp_path / "algorithms" / "tok").mkdir(parents=True, exist_ok=True)
        (tmp_path / "algorithms" / "tok" / name).write_bytes(data)
    item = algorithm("tok", "data://.my/<algo>/tok.tar.gz" if packed else None)
    with pytest.raises(ExportError, match=re.escape(refusal)):
        export_algorithm(item, str(tmp_path), default_stores(), Names(), limits)
    assert export_algorithm(item, str(tmp_path), default_stores(), Names()).files  # within the default limits


def test_missing_code_or_data_names_the_uri(tmp_path: Path):
    with pytest.raises(ExportError, match="no such file or folder"):
        export_algorithm(algorithm("ghost"), str(tmp_path), default_stores(), Names())
    (tmp_path / "algorithms" / "tok").mkdir(parents=True)
    (tmp_path / "algorithms" / "tok" / "tok.py").write_text("")
    with pytest.raises(ExportError, match=r"data/tok/gone.txt: no such file"):
        export_algorithm(
            algorithm("tok", None, ("data://.my/<algo>/gone.txt",)), str(tmp_path), default_stores(), Names()
        )


def test_an_algorithm_that_calls_one_listed_after_it_fails_its_export(tmp_path: Path):
    for name, source in {
        "a": 'X = "algo://.my/b"\ndef apply(i):\n    return i\n',
        "b": "def apply(i):\n    return i\n",
    }.items():
        (tmp_path / "algorithms" / name).mkdir(parents=True)
        (tmp_path / "algorithms" / name / f"{name}.py").write_text(source)
    workflow = Workflow(name="w", algorithms=(algorithm("a"), algorithm("b")))
    cluster = LocalCluster(tmp_path / "cluster")
    first, second = prepare_algorithms(workflow, cluster, source=str(tmp_path), stores=default_stores())
    assert (first.state, first.stage) == ("failed", "export")
    assert first.error == "its code calls b, listed after it: list dependencies first"
    assert second.state == "validated"
