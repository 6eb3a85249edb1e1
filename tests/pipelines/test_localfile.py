"""Opening local files beneath an allowed folder: each way of leading the open elsewhere, with both resolvers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipelines.steps.errors import StepError
from pipelines.steps.localfile import (
    Resolver,
    best_resolver,
    check_file,
    open_path,
    resolve_openat2,
    resolve_walking,
)
from pipelines.steps.objects import FileObjects

SECRET = b"imaging-ONLY,42\n"
RESOLVERS = pytest.mark.parametrize("resolver", [resolve_openat2, resolve_walking], ids=["openat2", "walk"])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """assay/ (allowed: run/plate.csv, a link to a file and one to a folder outside) and imaging/ (not)."""
    (tmp_path / "assay" / "run").mkdir(parents=True)
    (tmp_path / "assay" / "run" / "plate.csv").write_bytes(b"own\n")
    (tmp_path / "imaging").mkdir()
    (tmp_path / "imaging" / "plate.csv").write_bytes(SECRET)
    (tmp_path / "assay" / "leak.csv").symlink_to(tmp_path / "imaging" / "plate.csv")
    (tmp_path / "assay" / "away").symlink_to(tmp_path / "imaging")
    return tmp_path


def roots(tree: Path) -> list[str]:
    return [f"{(tree / 'assay').as_uri()}/"]


def test_this_machine_resolves_with_openat2():
    # Where the kernel has it the kernel does the refusing; the walk is the fallback, tested alongside.
    assert best_resolver() is resolve_openat2


@RESOLVERS
def test_a_file_inside_is_opened_and_judged_on_its_descriptor(tree: Path, resolver: Resolver):
    found = open_path(str(tree / "assay" / "run" / "plate.csv"), roots(tree), where="w", resolver=resolver)
    try:
        check_file(found, where="w")
        assert os.pread(found.fd, 100, 0) == b"own\n" and found.info.st_size == 4
    finally:
        os.close(found.fd)


@RESOLVERS
@pytest.mark.parametrize("path", ["leak.csv", "away/plate.csv"], ids=["linked file", "linked folder on the way"])
def test_a_link_is_refused_naming_where_it_is(tree: Path, resolver: Resolver, path: str):
    with pytest.raises(StepError) as refused:
        open_path(str(tree / "assay" / path), roots(tree), where="sources[0]", resolver=resolver)
    link = tree / "assay" / path.split("/")[0]
    assert refused.value.status == 403
    assert str(refused.value) == (
        f"policy_denied: sources[0]: expected a path without symbolic links below {tree / 'assay'}, "
        f"found a symbolic link at {link}"
    )


@RESOLVERS
def test_the_open_itself_refuses_a_link_whatever_was_checked_before(tree: Path, resolver: Resolver):
    root = os.open(tree / "assay", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for parts in (("leak.csv",), ("away", "plate.csv")):
            with pytest.raises(OSError) as refused:
                resolver(root, parts, os.O_RDONLY | os.O_NOFOLLOW)
            assert refused.value.errno == errno.ELOOP
    finally:
        os.close(root)


@pytest.mark.parametrize(
    "path",
    ["{tree}/assay/../imaging/plate.csv", "{tree}/assay/./run/plate.csv", "{tree}/assay//run/plate.csv"],
)
def test_dot_dot_dot_and_empty_segments_are_refused_before_any_open(tree: Path, path: str):
    with pytest.raises(StepError) as refused:
        open_path(path.format(tree=tree), roots(tree), where="w")
    assert refused.value.status == 403 and "expected a path without '..', '.' or empty segments" in str(refused.value)


@pytest.mark.parametrize("path", ["{tree}/imaging/plate.csv", "{tree}/assay-old/x", "relative/x"])
def test_a_path_outside_the_allowed_folders_is_refused(tree: Path, path: str):
    with pytest.raises(StepError) as refused:
        open_path(path.format(tree=tree), roots(tree), where="w")
    assert refused.value.status in (400, 403)
    assert "expected a path under the allowed folders" in str(refused.value) or "absolute" in str(refused.value)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tree: Path):
    os.mkfifo(tree / "assay" / "pipe.csv")  # an open for reading would wait for ever without O_NONBLOCK
    found = open_path(str(tree / "assay" / "pipe.csv"), roots(tree), where="w")
    try:
        with pytest.raises(StepError, match="expected a regular file, found a FIFO"):
            check_file(found, where="w")
    finally:
        os.close(found.fd)


def test_a_listing_lists_links_without_entering_them_and_their_open_refuses_them(tree: Path):
    store = FileObjects(roots(tree))
    items = list(store.list(f"{(tree / 'assay').as_uri()}/"))
    assert [item.name for item in items] == ["away", "leak.csv", "run/plate.csv"]
    for item in items[:2]:
        with pytest.raises(StepError, match="found a symbolic link at"):
            store.open(item)
    with store.open(items[2]) as stream:
        assert stream.read() == b"own\n"


def test_a_file_swapped_after_it_was_listed_is_not_read(tree: Path):
    store = FileObjects(roots(tree))
    (item,) = store.list((tree / "assay" / "run" / "plate.csv").as_uri())
    (tree / "assay" / "run" / "other.csv").write_bytes(b"own\n")
    os.replace(tree / "assay" / "run" / "other.csv", tree / "assay" / "run" / "plate.csv")  # same bytes, new file
    with pytest.raises(StepError) as refused:
        store.open(item)
    assert refused.value.status == 502 and "another file than the one listed" in str(refused.value)


def test_bytes_come_from_the_descriptor_even_when_the_path_is_swapped_for_a_link(tree: Path):
    store = FileObjects(roots(tree))
    (item,) = store.list((tree / "assay" / "run" / "plate.csv").as_uri())
    with store.open(item) as stream:
        (tree / "assay" / "run" / "swap").symlink_to(tree / "imaging" / "plate.csv")
        os.replace(tree / "assay" / "run" / "swap", tree / "assay" / "run" / "plate.csv")
        assert stream.read() == b"own\n"
    with pytest.raises(StepError, match="found a symbolic link"):
        store.open(item)  # and a later open meets the link


def test_a_missing_allowed_folder_is_not_found(tmp_path: Path):
    with pytest.raises(StepError) as missing:
        open_path(str(tmp_path / "gone" / "x.csv"), [f"{(tmp_path / 'gone').as_uri()}/"], where="w")
    assert missing.value.status == 404 and "no such file or folder" in str(missing.value)
