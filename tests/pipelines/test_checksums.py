"""HashingReader going back, as a resumed upload makes it: its hashes always cover bytes 0 to where it is, once."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pipelines.steps.checksums import SNAPSHOT_EVERY, HashingReader, of_bytes
from pipelines.steps.objects import FileObjects, SourceObject, resuming

DATA = os.urandom(3 * SNAPSHOT_EVERY + 12345)


def read_to_end(reader: HashingReader, piece: int = 100_000) -> None:
    while reader.read(piece):
        pass


@pytest.mark.parametrize(
    "back_to",
    [0, 1, SNAPSHOT_EVERY - 1, SNAPSHOT_EVERY, SNAPSHOT_EVERY + 7, 2 * SNAPSHOT_EVERY + 99_999, len(DATA)],
)
def test_going_back_anywhere_gives_the_checksums_of_the_bytes_once_in_order(back_to: int):
    reader = HashingReader(io.BytesIO(DATA))
    read_to_end(reader)
    assert reader.seek(back_to) == back_to == reader.tell()
    read_to_end(reader, 333_333)
    assert reader.bytes == len(DATA) and reader.checksums == of_bytes(DATA)


@pytest.mark.parametrize("back_to", [5, 1000, 7 * 1000 + 1])
def test_further_back_than_the_states_kept_starts_again_from_the_first_byte(back_to: int):
    data = os.urandom(10 * 1000)
    reader = HashingReader(io.BytesIO(data), every=1000, kept=3)  # states at 7000, 8000 and 9000 only
    while reader.read(500):
        pass
    reader.seek(back_to)
    read_to_end(reader)
    assert reader.checksums == of_bytes(data)


def test_a_stream_that_cannot_seek_cannot_go_back():
    class Forward(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            buffer[:1] = b"x"
            return 1

    reader = HashingReader(io.BufferedReader(Forward()))  # type: ignore[arg-type]
    reader.read(10)
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(3)


def test_a_resuming_file_reader_goes_back_by_opening_again(tmp_path: Path):
    (tmp_path / "plate.bin").write_bytes(DATA)
    item = SourceObject((tmp_path / "plate.bin").as_uri(), "plate.bin", len(DATA), of_bytes(DATA))
    with resuming(FileObjects(), item) as stream:
        reader = HashingReader(stream)
        reader.read(2 * SNAPSHOT_EVERY + 10)
        reader.seek(SNAPSHOT_EVERY + 3)
        read_to_end(reader)
    assert reader.checksums == item.checksums
