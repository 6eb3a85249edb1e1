"""The ratchet's files under the results location: two runs can never both move the bar, nor drop history."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pipelines.steps.ratchet.baseline import (
    SLOWER_THAN_BAR,
    VIOLATED,
    Bar,
    Baseline,
    Call,
    Decision,
    Measurement,
    baseline_to_json,
    decide_ratchet,
)
from pipelines.steps.ratchet.ledger import MAX_CONFLICTS, Ledger, LedgerError, describe_baseline, ledger_paths
from relay.adapters.localfs import LocalBlobStore
from tests.fakes import MemoryBlobStore

AT = "2026-11-21T12:00:00.000Z"
PATHS = ledger_paths("gs://results/relay", "flow", "local")


def document(bar: float, run_key: str) -> bytes:
    baseline = Baseline({"t": Bar(bar, True, run_key, AT)})
    return json.dumps(baseline_to_json(baseline, workflow="flow", destination="local", run_key=run_key, at=AT)).encode()


class RacingStore(MemoryBlobStore):
    """Another run writes `uri` just before each of our next `races` conditional writes of it."""

    def __init__(self, uri: str, rival: bytes, races: int = 1) -> None:
        super().__init__()
        self.uri, self.rival, self.races = uri, rival, races

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        if uri == self.uri and if_generation_match is not None and self.races > 0:
            self.races -= 1
            current = self.read(uri).data if self.uris(uri) else b""
            super().write(uri, current + self.rival if uri.endswith(".jsonl") else self.rival)
        return super().write(uri, data, if_generation_match=if_generation_match)


def deciding(median: float, calls: list[Baseline]):
    def decide(stored: Baseline) -> Decision:
        calls.append(stored)
        run = Measurement("t", (Call(True, median),), tolerance=0.1)
        return decide_ratchet(stored, [run], run_key="ours", at=AT)

    return decide


def test_a_run_that_lost_the_race_decides_again_against_the_winners_bar():
    store = RacingStore(PATHS.baseline, document(0.5, "rival"))
    store.write(PATHS.baseline, document(1.0, "earlier"))
    seen: list[Baseline] = []
    stored, decision = Ledger(store, PATHS).ratchet(deciding(0.8, seen), describe_baseline("flow", "local", "ours", AT))
    # Against the bar it first read (1.0) 0.8 would have tightened it, undoing the rival's 0.5.
    assert [b.bars["t"].seconds for b in seen] == [1.0, 0.5] and stored.bars["t"].seconds == 0.5
    (verdict,) = decision.verdicts
    assert (verdict.verdict, verdict.reason) == (VIOLATED, SLOWER_THAN_BAR)
    final = json.loads(store.read(PATHS.baseline).data)
    assert final["tests"]["t"]["bar_seconds"] == 0.5 and final["updated_by"] == "ours"


def test_the_first_baseline_is_created_only_if_still_absent():
    store = RacingStore(PATHS.baseline, document(0.3, "rival"))
    seen: list[Baseline] = []
    Ledger(store, PATHS).ratchet(deciding(0.8, seen), describe_baseline("flow", "local", "ours", AT))
    assert dict(seen[0].bars) == {} and seen[1].bars["t"].seconds == 0.3
    assert json.loads(store.read(PATHS.baseline).data)["tests"]["t"]["bar_seconds"] == 0.3


def test_endless_races_give_up_with_an_error_instead_of_a_silent_overwrite():
    store = RacingStore(PATHS.baseline, document(0.5, "rival"), races=MAX_CONFLICTS + 1)
    with pytest.raises(LedgerError, match=f"lost {MAX_CONFLICTS + 1} races"):
        Ledger(store, PATHS).ratchet(deciding(0.8, []), describe_baseline("flow", "local", "ours", AT))
    assert json.loads(store.read(PATHS.baseline).data)["updated_by"] == "rival"


def test_history_lines_of_racing_runs_are_all_kept():
    rival = b'{"run_key":"rival"}\n'
    store = RacingStore(PATHS.history, rival)
    store.write(PATHS.history, b'{"run_key":"first"}\nnot json\n')
    entries = Ledger(store, PATHS).append_history({"run_key": "ours"})
    assert [e["run_key"] for e in entries] == ["first", "rival", "ours"]
    assert store.read(PATHS.history).data.decode().splitlines()[-1] == '{"run_key":"ours"}'


def test_a_baseline_this_code_cannot_read_is_kept_unless_a_reset_replaces_it():
    store = MemoryBlobStore()
    store.write(PATHS.baseline, b'{"bars": "hand-edited"}')
    ledger = Ledger(store, PATHS)
    with pytest.raises(LedgerError, match="reset_baseline with a reason replaces it"):
        ledger.ratchet(deciding(0.8, []), describe_baseline("flow", "local", "ours", AT))
    ledger.ratchet(deciding(0.8, []), describe_baseline("flow", "local", "ours", AT), replace_malformed=True)
    assert json.loads(store.read(PATHS.baseline).data)["tests"]["t"]["bar_seconds"] == 0.8


def test_concurrent_runs_on_a_local_results_folder_keep_the_lowest_bar_and_every_line(tmp_path: Path):
    paths = ledger_paths(str(tmp_path), "flow", "local")
    medians = [0.9, 0.4, 0.7, 0.2, 0.6, 0.3, 0.8, 0.5, 0.45, 0.35, 0.25]
    assert len(medians) == MAX_CONFLICTS + 1  # the most runs at once the ledger guarantees
    barrier = threading.Barrier(len(medians))
    failures: list[BaseException] = []

    def one_run(index: int, median: float) -> None:
        ledger = Ledger(LocalBlobStore(tmp_path), paths)
        key = f"run-{index}"

        def decide(stored: Baseline) -> Decision:
            run = Measurement("t", (Call(True, median),), tolerance=10.0)  # wide: every run passes
            return decide_ratchet(stored, [run], run_key=key, at=AT)

        try:
            barrier.wait()
            ledger.ratchet(decide, describe_baseline("flow", "local", key, AT))
            ledger.append_history({"run_key": key})
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=one_run, args=(i, m)) for i, m in enumerate(medians)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    final = json.loads((tmp_path / "ratchet" / "flow" / "local" / "baseline.json").read_text())
    assert final["tests"]["t"]["bar_seconds"] == min(medians)  # no run's tightening was lost
    lines = (tmp_path / "ratchet" / "flow" / "local" / "history.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["run_key"] for line in lines) == sorted(f"run-{i}" for i in range(len(medians)))
