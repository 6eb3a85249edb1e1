"""Export: generic names rewritten to a destination's, code read from folders, archives and single files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pipelines.steps.objects import default_stores
from pipelines.steps.ratchet.clusters.local import LocalCluster
from pipelines.steps.ratchet.export import ExportError, code_location, export_algorithm
from pipelines.steps.ratchet.placeholders import called_algorithms, rewrite_text, rewrite_value
from pipelines.steps.ratchet.stages import prepare_algorithms
from pipelines.steps.ratchet.workflow import Algorithm, Workflow


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


def archive(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "data" / "tok" / "tok.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    path.write_bytes(buffer.getvalue())
    return path


def test_an_archive_is_unpacked_rewritten_and_links_are_left_out(tmp_path: Path):
    archive(tmp_path, {"./src/tok.py": b'DATA = "data://.my/<algo>/words.txt"\n', "model.bin": b"\xff\xfe.my"})
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


@pytest.mark.parametrize("member", ["../evil.py", "/abs/evil.py"])
def test_an_archive_that_would_write_outside_its_tree_is_refused(tmp_path: Path, member: str):
    archive(tmp_path, {member: b"x"})
    with pytest.raises(ExportError, match="would land outside"):
        export_algorithm(algorithm("tok", "data://.my/<algo>/tok.tar.gz"), str(tmp_path), default_stores(), Names())


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
