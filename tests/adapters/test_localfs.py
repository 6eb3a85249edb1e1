from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.adapters.localfs import LocalBlobStore
from relay.errors import BlobNotFoundError, PreconditionFailedError


def test_create_only_and_generation_preconditions(tmp_path: Path):
    store = LocalBlobStore(tmp_path)
    uri = str(tmp_path / "runs" / "k" / "launch.json")
    first = store.write(uri, b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailedError):
        store.write(uri, b"2", if_generation_match=0)
    second = store.write(uri, b"2", if_generation_match=first)
    assert second > first
    with pytest.raises(PreconditionFailedError):
        store.write(uri, b"3", if_generation_match=first)
    assert store.read(uri) == store.read(f"file://{uri}", generation=second)
    assert store.read(uri).data == b"2"
    with pytest.raises(BlobNotFoundError):
        store.read(uri, generation=first)
    store.delete(uri, if_generation_match=second)
    with pytest.raises(BlobNotFoundError):
        store.stat(uri)


def test_generations_rise_even_when_writes_share_a_clock_tick(tmp_path: Path):
    store = LocalBlobStore(tmp_path)
    uri = str(tmp_path / "x.json")
    generations = [store.write(uri, str(n).encode()) for n in range(50)]
    assert generations == sorted(set(generations))


def test_only_one_of_many_concurrent_creates_wins(tmp_path: Path):
    store = LocalBlobStore(tmp_path)
    uri = str(tmp_path / "claim.json")
    wins: list[int] = []
    barrier = threading.Barrier(10)

    def claim(n: int) -> None:
        barrier.wait()
        try:
            store.write(uri, str(n).encode(), if_generation_match=0)
            wins.append(n)
        except PreconditionFailedError:
            pass

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and store.read(uri).data == str(wins[0]).encode()


def test_listing_a_prefix(tmp_path: Path):
    store = LocalBlobStore(tmp_path)
    for name in ("runs/a/launch.json", "runs/a/result.json", "runs/b/launch.json", "rejected/c.json"):
        store.write(str(tmp_path / name), b"{}")
    assert list(store.list(str(tmp_path / "runs") + "/")) == [
        str(tmp_path / "runs/a/launch.json"),
        str(tmp_path / "runs/a/result.json"),
        str(tmp_path / "runs/b/launch.json"),
    ]
    assert list(store.list(f"file://{tmp_path}/rejected/")) == [f"file://{tmp_path}/rejected/c.json"]


def test_stat_says_when_the_file_last_changed(tmp_path: Path):
    store = LocalBlobStore(tmp_path)
    uri = str(tmp_path / "x.json")
    store.write(uri, b"1")
    info = store.stat(uri)
    assert info.updated == datetime.fromtimestamp((tmp_path / "x.json").stat().st_mtime, UTC)
