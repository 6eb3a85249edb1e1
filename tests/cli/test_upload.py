from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from relay.adapters.routing import RoutingBlobStore
from tests.cli.support import Ran


def test_files_keep_their_names_under_a_prefix(cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path):
    (tmp_path / "plate-4.json").write_text('{"extra_data": {"od600": [0.4]}}')
    (tmp_path / "notes.csv").write_text("well,od600\n")
    ran = cli("upload", str(tmp_path / "plate-4.json"), str(tmp_path / "notes.csv"), "gs://lab-data/mine/")
    assert (ran.code, ran.err) == (0, "")
    assert sorted(blobs.list("gs://lab-data/")) == ["gs://lab-data/mine/notes.csv", "gs://lab-data/mine/plate-4.json"]
    assert blobs.read("gs://lab-data/mine/plate-4.json").data == b'{"extra_data": {"od600": [0.4]}}'
    assert ran.out.splitlines()[-1] == "2 files uploaded: name gs://lab-data/mine/ in a trigger's sources"


def test_a_folder_keeps_its_tree_and_one_file_may_be_renamed(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path
):
    (tmp_path / "run" / "a").mkdir(parents=True)
    (tmp_path / "run" / "a" / "x.txt").write_text("x")
    (tmp_path / "run" / "y.txt").write_text("y")
    assert cli("upload", str(tmp_path / "run"), "gs://lab-data/mine/").code == 0
    assert cli("upload", str(tmp_path / "run" / "y.txt"), "gs://lab-data/renamed.txt").code == 0
    assert sorted(blobs.list("gs://lab-data/")) == [
        "gs://lab-data/mine/run/a/x.txt",
        "gs://lab-data/mine/run/y.txt",
        "gs://lab-data/renamed.txt",
    ]


def test_nothing_is_sent_unless_every_argument_makes_sense(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path
):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    missing = cli("upload", str(tmp_path / "a.txt"), str(tmp_path / "gone.txt"), "gs://lab-data/mine/")
    assert (
        missing.code == 2
        and missing.err == f"relay upload: {tmp_path / 'gone.txt'}: expected a file or a folder, found nothing there\n"
    )
    two_into_one = cli("upload", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "gs://lab-data/one.txt")
    assert two_into_one.code == 2 and "expected gs://bucket/prefix/ (ending in /) for 2 files" in two_into_one.err
    local = cli("upload", str(tmp_path / "a.txt"), str(tmp_path / "elsewhere"))
    assert local.code == 2 and "DEST: expected gs://bucket/prefix/ or gs://bucket/name" in local.err
    assert list(blobs.list("gs://lab-data/")) == []


def test_a_trigger_file_uploaded_where_triggers_land_is_said_to_start_a_run(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, tmp_path: Path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntenants:\n  - name: lab\n    triggers: [gs://triggers/]\n")
    (tmp_path / "t.json").write_text('{"pipeline": "echo", "parameters": {"message": "hi"}}')
    ran = cli("upload", str(tmp_path / "t.json"), "gs://triggers/", "--policy", str(policy))
    assert ran.code == 0 and ran.out.splitlines()[-1] == (
        "1 trigger file uploaded where Relay takes triggers: it starts a run; "
        "follow it: relay status gs://triggers/t.json"
    )
    data = cli("upload", str(tmp_path / "t.json"), "gs://lab-data/mine/", "--policy", str(policy))
    assert data.out.splitlines()[-1] == "1 file uploaded: name gs://lab-data/mine/ in a trigger's sources"
