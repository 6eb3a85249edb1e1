"""The sets' storage protocol (relay.set_store): who is in a set when deliveries and closes interleave, a close a
crash interrupted finished by whoever comes next, redeliveries, and tenants kept apart."""

from __future__ import annotations

from datetime import timedelta

from relay import records, set_store
from relay.set_store import Group, Member, OpenSet
from relay.sets import SetRule
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore

RESULTS = "gs://results/relay"
GROUP = Group("lab", "plates", "lab-data", "plates/p1")
PAIRS = SetRule(size=2)


def member(name: str, generation: int = 1) -> Member:
    return Member("lab-data", f"plates/p1/{name}", generation)


def test_the_second_of_a_pair_closes_the_set_with_both():
    store = MemoryBlobStore()
    assert set_store.join(store, RESULTS, GROUP, PAIRS, member("a"), NOW) == []
    [closed] = set_store.join(store, RESULTS, GROUP, PAIRS, member("b"), NOW + timedelta(seconds=1))
    assert (closed.number, closed.reason, closed.complete) == (1, "size", True)
    assert closed.objects == ("gs://lab-data/plates/p1/a", "gs://lab-data/plates/p1/b")
    assert [o.number for o in set_store.open_sets(store, RESULTS)] == [1]  # open until launched (done)
    set_store.done(store, RESULTS, closed)
    assert list(set_store.open_sets(store, RESULTS)) == []


def test_an_object_that_arrives_after_the_seal_starts_the_next_set():
    store = MemoryBlobStore()
    for name in ("a", "b"):
        set_store.join(store, RESULTS, GROUP, PAIRS, member(name), NOW)
    # A delivery that read the head before the close: it writes its arrival into set 1, sees the seal, moves on.
    store.write(f"{GROUP.base(RESULTS)}/head.json", records.encode({"number": 1}))
    [met] = set_store.join(store, RESULTS, GROUP, PAIRS, member("c"), NOW)
    assert met.number == 1 and "gs://lab-data/plates/p1/c" not in met.objects
    [closed] = set_store.join(store, RESULTS, GROUP, PAIRS, member("d"), NOW + timedelta(seconds=1))
    assert (closed.number, closed.objects) == (2, ("gs://lab-data/plates/p1/c", "gs://lab-data/plates/p1/d"))


def test_a_redelivery_finds_the_set_its_object_is_in_and_joins_nothing_twice():
    store = MemoryBlobStore()
    set_store.join(store, RESULTS, GROUP, PAIRS, member("a"), NOW)
    assert set_store.join(store, RESULTS, GROUP, PAIRS, member("a"), NOW + timedelta(seconds=5)) == []
    [closed] = set_store.join(store, RESULTS, GROUP, PAIRS, member("b"), NOW)
    [again] = set_store.join(store, RESULTS, GROUP, PAIRS, member("a"), NOW + timedelta(seconds=9))
    assert again == closed and len(closed.members) == 2


def test_a_close_a_crash_left_sealed_is_finished_by_the_tick():
    store = MemoryBlobStore()
    quiet = SetRule(quiet_seconds=60)
    set_store.join(store, RESULTS, GROUP, quiet, member("a"), NOW)
    set_store.seal(store, GROUP.number(RESULTS, 1), "quiet", NOW + timedelta(seconds=61))  # then the closer died
    [open_set] = set_store.open_sets(store, RESULTS)
    [closed] = set_store.close_due(store, RESULTS, open_set, quiet, NOW + timedelta(seconds=62))
    assert (closed.number, closed.reason, closed.objects) == (1, "quiet", ("gs://lab-data/plates/p1/a",))


def test_an_open_set_stays_open_on_the_tick_until_its_quiet_period_has_passed():
    store = MemoryBlobStore()
    quiet = SetRule(quiet_seconds=60)
    set_store.join(store, RESULTS, GROUP, quiet, member("a"), NOW)
    assert set_store.close_due(store, RESULTS, OpenSet(GROUP, 1), quiet, NOW + timedelta(seconds=59)) == []
    assert len(set_store.close_due(store, RESULTS, OpenSet(GROUP, 1), quiet, NOW + timedelta(seconds=60))) == 1


def test_two_tenants_routes_of_one_id_over_one_folder_never_share_a_set():
    store = MemoryBlobStore()
    other = Group("other", "plates", "lab-data", "plates/p1")
    assert other.base(RESULTS) != GROUP.base(RESULTS) and other.set_id(1) != GROUP.set_id(1)
    set_store.join(store, RESULTS, GROUP, PAIRS, member("a"), NOW)
    assert set_store.join(store, RESULTS, other, PAIRS, member("b"), NOW) == []  # the other tenant's first object
    assert sorted(o.group.tenant for o in set_store.open_sets(store, RESULTS)) == ["lab", "other"]
