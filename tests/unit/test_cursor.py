"""The reconcile cursor: the order a tick takes, and a place saved only over the record it was read from."""

from __future__ import annotations

from datetime import timedelta

from relay import records
from relay.cursor import Cursor, read_cursor, rotated, save_cursor
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore

URI = "gs://results/relay/reconcile/kfp.json"


def test_the_order_starts_past_the_place_and_wraps_around():
    keys = ["c", "a", "d", "b"]
    assert rotated(keys, "") == ["a", "b", "c", "d"]
    assert rotated(keys, "b") == ["c", "d", "a", "b"]
    assert rotated(keys, "bb") == ["c", "d", "a", "b"]  # the key it stopped at has ended since
    assert rotated(keys, "z") == ["a", "b", "c", "d"]
    assert rotated([], "b") == []


def test_a_place_is_saved_over_the_record_it_was_read_from_only():
    store = MemoryBlobStore()
    first = read_cursor(store, URI)
    assert first == Cursor()
    assert save_cursor(store, URI, first, Cursor("k1", NOW + timedelta(seconds=30)), now=NOW, note="stopped")
    saved = read_cursor(store, URI)
    assert (saved.after, saved.not_before) == ("k1", NOW + timedelta(seconds=30)) and saved.generation
    assert records.decode(store.read(URI).data)["note"] == "stopped"
    # Another tick that read the first (absent) cursor loses: the place saved stands.
    assert not save_cursor(store, URI, first, Cursor("k9"), now=NOW)
    assert read_cursor(store, URI).after == "k1"


def test_nothing_is_written_when_the_place_did_not_move():
    store = MemoryBlobStore()
    assert save_cursor(store, URI, Cursor(), Cursor(), now=NOW)
    assert store.uris() == []


def test_a_cursor_that_cannot_be_read_starts_over_and_is_overwritten():
    store = MemoryBlobStore()
    for garbage in (b"not json", b'["a list"]', b'{"after": 3}', b'{"after": "k", "not_before": "yesterday"}'):
        store.write(URI, garbage)
        broken = read_cursor(store, URI)
        assert (broken.after, broken.not_before) == ("", None) and broken.generation
        assert save_cursor(store, URI, broken, Cursor("k2"), now=NOW)
        assert read_cursor(store, URI).after == "k2"
