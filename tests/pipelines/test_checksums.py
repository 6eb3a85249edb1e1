"""HashingReader going back, as a resumed upload makes it: its hashes always cover bytes 0 to where it is, once."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from pipelines.steps.checksums import SNAPSHOT_EVERY, Checksums, HashingReader, md5_from_hex, of_bytes, s3_md5
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


class Rewinds(io.BytesIO):
    """A seekable source that notes where it is sent back to."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sent_back_to: list[int] = []

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.sent_back_to.append(offset)
        return super().seek(offset, whence)


def test_going_back_rereads_only_from_the_latest_state_at_or_before_the_target():
    data = os.urandom(5000)
    source = Rewinds(data)
    reader = HashingReader(source, every=1000, kept=3)  # states at 3000, 4000 and 5000 once all is read
    while reader.read(500):
        pass
    for target, reread_from in [(4200, 4000), (4000, 4000), (3000, 3000), (2999, 0)]:
        reader.seek(target)
        assert source.sent_back_to[-1] == reread_from, target
        read_to_end(reader)
        assert reader.checksums == of_bytes(data)


def test_seeking_relative_to_here_and_forward_reads_the_bytes_between():
    reader = HashingReader(io.BytesIO(DATA))
    reader.read(10)
    assert reader.seek(5, io.SEEK_CUR) == 15 == reader.tell()
    assert reader.seek(-5, io.SEEK_CUR) == 10
    assert reader.seek(2 * SNAPSHOT_EVERY + 1) == 2 * SNAPSHOT_EVERY + 1  # forward: read, hashed, not sent
    read_to_end(reader)
    assert reader.checksums == of_bytes(DATA) and reader.readable()


@pytest.mark.parametrize(("offset", "whence"), [(0, io.SEEK_END), (-1, io.SEEK_SET), (-11, io.SEEK_CUR)])
def test_no_seek_from_the_end_or_before_the_start(offset: int, whence: int):
    reader = HashingReader(io.BytesIO(b"x" * 100))
    reader.read(10)
    with pytest.raises(io.UnsupportedOperation, match=f"cannot seek to {offset} \\(whence {whence}\\)"):
        reader.seek(offset, whence)


def test_seeking_past_the_end_of_the_source_says_where_it_ended():
    reader = HashingReader(io.BytesIO(b"x" * 100))
    with pytest.raises(io.UnsupportedOperation, match="the source ended at 100 bytes, before 101"):
        reader.seek(101)


def test_a_source_that_cannot_seek_says_so_when_sent_back():
    class OneWay(io.BytesIO):
        def seekable(self) -> bool:
            return False

    reader = HashingReader(OneWay(b"x" * 100), every=10)
    reader.read(50)
    assert reader.seek(50) == 50  # where it is already: nothing to go back for
    with pytest.raises(io.UnsupportedOperation, match="a streamed source cannot go back to 3"):
        reader.seek(3)


def test_empty_bytes_have_the_well_known_checksums():
    assert of_bytes(b"") == Checksums(crc32c="AAAAAA==", md5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert HashingReader(io.BytesIO(b"")).checksums == of_bytes(b"")


def test_an_s3_hex_etag_reads_as_the_cloud_storage_md5():
    assert md5_from_hex(hashlib.md5(b"plate").hexdigest()) == of_bytes(b"plate").md5


ETAG = '"' + hashlib.md5(b"plate").hexdigest() + '"'


@pytest.mark.parametrize(
    ("answer", "md5"),
    [
        ({"ETag": ETAG}, of_bytes(b"plate").md5),
        ({"ETag": ETAG, "ServerSideEncryption": "AES256"}, of_bytes(b"plate").md5),
        ({"ETag": ETAG.strip('"')}, of_bytes(b"plate").md5),
        ({"ETag": '"' + hashlib.md5(b"x").hexdigest() + '-2"'}, None),  # multipart: an MD5 of the parts' MD5s
        ({"ETag": ETAG, "ServerSideEncryption": "aws:kms"}, None),
        ({"ETag": ETAG, "ServerSideEncryption": "aws:kms:dsse"}, None),
        ({"ETag": ETAG, "SSECustomerAlgorithm": "AES256"}, None),
        ({"ETag": '""'}, None),
        ({}, None),
    ],
)
def test_an_s3_etag_is_an_md5_only_for_single_part_unencrypted_or_s3_keyed_objects(answer: dict[str, str], md5):
    assert s3_md5(answer) == md5


@pytest.mark.parametrize(
    ("mine", "theirs", "verdict"),
    [
        (Checksums("c1", "m1"), Checksums("c1", "m2"), True),  # the CRC32C both know decides
        (Checksums("c1", "m1"), Checksums("c2", "m1"), False),
        (Checksums(None, "m1"), Checksums("c2", "m1"), True),  # else the MD5
        (Checksums("c1", "m1"), Checksums(None, "m2"), False),
        (Checksums("c1", None), Checksums(None, "m1"), None),  # nothing in common: unknown, not a mismatch
        (Checksums(), Checksums(), None),
    ],
)
def test_checksums_match_on_the_first_both_sides_know(mine: Checksums, theirs: Checksums, verdict: bool | None):
    assert mine.matches(theirs) is verdict
    assert theirs.matches(mine) is verdict


def test_checksums_describe_themselves_by_the_strongest_known():
    assert Checksums("c1", "m1").describe() == "crc32c=c1"
    assert Checksums(None, "m1").describe() == "md5=m1"
    assert Checksums().describe() == "none"
