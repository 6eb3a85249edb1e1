"""The runs board's model: records in, runs by state per tenant, queue depth, rejections, alerts out; a tenant's
board holds its own records only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay import naming, queue, records
from relay.board import (
    NO_TENANT,
    OTHER,
    RECENT_REJECTIONS,
    STATES,
    Absence,
    DeadLetter,
    DeadLetters,
    TenantRuns,
    build_board,
    parse_absence,
    rejection_reason,
    run_tenant,
)
from relay.board_store import Sources, board_for, read_sources
from relay.status import RunRecords
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore
from tests.unit.board_support import HOSTILE, MIX, seed

RESULTS = "gs://results/relay"
PROBLEM = {"field": "f", "expected": "e", "found": "x"}
LETTERS = DeadLetters((DeadLetter("4921", "2026-11-21T10:00:00+00:00", "15", "gs://triggers/a.json#7"),))


@pytest.fixture
def sources() -> Sources:
    store = MemoryBlobStore()
    seed(store, RESULTS, NOW)
    return read_sources(store, RESULTS)


def counts(runs: TenantRuns) -> dict[str, int]:
    return {state: n for state, n in runs.counts if n}


def test_the_operators_board_counts_every_tenants_runs_by_state(sources: Sources):
    board = board_for(sources, deployment="lab-prod", now=NOW, dead_letters=LETTERS)
    assert board.deployment == "lab-prod" and board.generated_at == "2026-11-21T12:00:00.000Z"
    assert [t.tenant for t in board.tenants] == [NO_TENANT, "assay", "imaging"]
    by_tenant = {t.tenant: t for t in board.tenants}
    assert counts(by_tenant["assay"]) == MIX["assay"]
    assert counts(by_tenant["imaging"]) == MIX["imaging"]
    assert counts(by_tenant[NO_TENANT]) == {"rejected": 1}  # the rejection recorded before the tenant field
    assert [state for state, _ in by_tenant["assay"].counts] == list(STATES)  # every state, zero or not, in order
    assert by_tenant["assay"].queued == 2 and by_tenant["imaging"].queued == 0 and board.queue_depth == 2
    assert by_tenant["assay"].in_flight == 2 + 1 + 3 and board.in_flight == 6 + 1
    assert board.dead_letters == LETTERS


def test_rejections_newest_first_with_their_first_problem_as_the_reason(sources: Sources):
    board = board_for(sources, deployment="d", now=NOW, dead_letters=None)
    assert board.rejected == 3 + 1 + 1
    assert [r.run_key for r in board.rejections] == [
        "assay-rejected-0-5f0c2a9be41d7733c6a8e1f0",
        "assay-rejected-1-5f0c2a9be41d7733c6a8e1f0",
        "assay-rejected-2-5f0c2a9be41d7733c6a8e1f0",
        "imaging-rejected-0-5f0c2a9be41d7733c6a8e1f0",
        "legacy-0",
    ]
    first, *_, imaging, legacy = board.rejections
    assert first.reason == f"parameters.plate: expected a plate id like P-0001, found {HOSTILE}"
    assert first.code == "invalid_trigger" and first.tenant == "assay" and first.pipeline == "plate-qc"
    assert first.uri == "gs://triggers/assay/assay-rejected-0-5f0c2a9be41d7733c6a8e1f0.json"
    assert imaging.reason.endswith(" (+1 more)")
    assert legacy.tenant == NO_TENANT


def test_only_the_newest_rejections_are_listed_and_all_are_counted():
    def rejected(n: int) -> RunRecords:
        at = f"2026-11-21T{n % 24:02}:{n % 60:02}:00.000Z"
        return RunRecords(f"k{n:03}", {}, rejection={"state": "rejected", "tenant": "", "rejected_at": at})

    runs = [rejected(n) for n in range(RECENT_REJECTIONS + 5)]
    board = build_board(deployment="d", now=NOW, runs=runs, queued=(), absences=(), dead_letters=None)
    assert board.rejected == RECENT_REJECTIONS + 5 and len(board.rejections) == RECENT_REJECTIONS
    assert [r.at for r in board.rejections] == sorted((r.at for r in board.rejections), reverse=True)


def test_a_tenants_board_holds_its_own_runs_rejections_queue_and_alerts_only(sources: Sources):
    for tenant, other in (("assay", "imaging"), ("imaging", "assay")):
        board = board_for(sources, deployment="d", now=NOW, dead_letters=LETTERS, tenant=tenant)
        assert board.tenant == tenant
        assert [t.tenant for t in board.tenants] == [tenant]
        assert counts(board.tenants[0]) == MIX[tenant]
        assert board.rejections and {r.tenant for r in board.rejections} == {tenant}
        assert all(other not in r.run_key and "legacy" not in r.run_key for r in board.rejections)
        assert board.dead_letters is None  # dead letters are no tenant's: the operator's board alone
    assert [
        a.tenant for a in board_for(sources, deployment="d", now=NOW, dead_letters=None, tenant="assay").alerts
    ] == ["assay"]
    assert board_for(sources, deployment="d", now=NOW, dead_letters=None, tenant="imaging").alerts == ()


def test_a_tenant_the_records_do_not_name_gets_an_empty_board(sources: Sources):
    board = board_for(sources, deployment="d", now=NOW, dead_letters=None, tenant="nobody")
    assert board.tenants == () and board.rejections == () and board.alerts == () and board.queue_depth == 0


def test_a_deployment_without_tenants_counts_under_no_tenant():
    store = MemoryBlobStore()
    claim = records.claim_record(
        run_key="echo-1", pipeline="echo", backend="fake", trigger={}, parameters={}, labels={}, now=NOW,
        lease_seconds=600,
    )  # fmt: skip
    store.write(naming.launch_record(RESULTS, "echo-1"), records.encode(claim))
    queue.add_entry(store, RESULTS, "", queue.place_for(NOW, "echo-2"))
    board = board_for(read_sources(store, RESULTS), deployment="d", now=NOW, dead_letters=None)
    [only] = board.tenants
    assert only.tenant == NO_TENANT and counts(only) == {"launching": 1} and only.queued == 1


def test_a_state_relay_does_not_know_is_counted_as_other_whatever_it_says():
    runs = [
        RunRecords("a", {}, launch={"tenant": "t", "state": "launched"}, result={"state": "}body{display:none"}),
        RunRecords("b", {}, launch={"tenant": "t", "state": "launched"}, result={"state": "paused-by-v9"}),
    ]
    [tenant] = build_board(deployment="d", now=NOW, runs=runs, queued=(), absences=(), dead_letters=None).tenants
    assert tenant.counts[-1] == (OTHER, 2) and tenant.total == 2


@pytest.mark.parametrize(
    ("records_of_run", "tenant"),
    [
        ({"launch": {"tenant": "lab"}}, "lab"),
        ({"skip": {"tenant": ""}}, ""),
        ({"rejection": {"tenant": "lab"}}, "lab"),
        ({"rejection": {"state": "rejected"}}, None),  # before rejections named their tenant
        ({"launch": {"tenant": None}}, None),
    ],
)
def test_a_runs_tenant_is_what_its_records_name(records_of_run: dict[str, dict[str, object]], tenant: str | None):
    assert run_tenant(RunRecords("k", {}, **records_of_run)) == tenant  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rejection", "reason"),
    [
        ({"message": "gs://t/a.json: unknown pipeline"}, "gs://t/a.json: unknown pipeline"),
        ({"message": "m", "error": {"problems": []}}, "m"),
        ({"message": "m", "error": {"problems": [PROBLEM]}}, "f: expected e, found x"),
        ({"error": {"problems": [PROBLEM] * 3}}, "f: expected e, found x (+2 more)"),
        ({"message": "m", "error": "not a mapping"}, "m"),
    ],
)  # fmt: skip
def test_a_rejections_reason_is_its_first_problem(rejection: dict[str, object], reason: str):
    assert rejection_reason(rejection) == reason


def test_an_absence_is_its_folders_tenants_whatever_it_says():
    absence = parse_absence("assay", "nightly/2026-11-21", {"tenant": "imaging", "expected": "a plate by 06:00"})
    assert absence == Absence("assay", "nightly/2026-11-21", "", "expected a plate by 06:00")
    at = records.timestamp(NOW - timedelta(hours=1))
    assert parse_absence("a", "w", {"due_at": at}).since == at
    assert parse_absence("a", "w", {}).message == "nothing arrived"
