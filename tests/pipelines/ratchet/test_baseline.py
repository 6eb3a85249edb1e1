"""The ratchet decision, table-driven: the bar is set, holds, tightens, is violated, and only loosens by reset."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from pipelines.steps.ratchet.baseline import (
    FAILED,
    FAILED_THAT_PASSED_BEFORE,
    MISSING,
    OK,
    SET,
    SLOWER_THAN_BAR,
    TIGHTENED,
    VIOLATED,
    Bar,
    Baseline,
    BaselineError,
    Call,
    Measurement,
    Reset,
    baseline_to_json,
    decide_ratchet,
    parse_baseline,
)

AT = "2026-11-21T12:00:00.000Z"


def passing(*seconds: float, tolerance: float = 0.1, slack: float = 0.0, name: str = "t") -> Measurement:
    return Measurement(name, tuple(Call(True, s) for s in seconds), tolerance, slack)


def failing(*seconds: float, name: str = "t") -> Measurement:
    calls = (Call(True, seconds[0]), *(Call(False, s) for s in seconds[1:])) if seconds else ()
    return Measurement(name, calls, 0.1)


def stored(seconds: float | None, passed: bool = True, name: str = "t") -> Baseline:
    return Baseline({name: Bar(seconds, passed, "earlier", "2026-11-20T12:00:00.000Z")})


# (stored baseline, this run, verdict, reason, median, bar after, limit)
CASES = {
    "first run sets the bar": (Baseline(), passing(0.3, 0.1, 0.2), SET, "", 0.2, 0.2, None),
    "faster tightens to the new median": (stored(1.0), passing(0.8, 0.9, 0.7), TIGHTENED, "", 0.8, 0.8, 1.1),
    "equal holds": (stored(1.0), passing(1.0), OK, "", 1.0, 1.0, 1.1),
    "slower within tolerance holds the bar": (stored(1.0), passing(1.05, 1.1, 1.0), OK, "", 1.05, 1.0, 1.1),
    "exactly at the limit holds": (stored(1.0), passing(1.1), OK, "", 1.1, 1.0, 1.1),
    "slower than the limit is violated": (
        stored(1.0),
        passing(1.2, 1.3, 1.11),
        VIOLATED,
        SLOWER_THAN_BAR,
        1.2,
        1.0,
        1.1,
    ),
    "zero tolerance: any slowdown is violated": (
        stored(1.0),
        passing(1.001, tolerance=0.0),
        VIOLATED,
        SLOWER_THAN_BAR,
        1.001,
        1.0,
        1.0,
    ),
    "slack absorbs timing noise": (stored(0.001), passing(0.05, slack=0.1), OK, "", 0.05, 0.001, 0.1011),
    "a per-test tolerance widens the limit": (stored(1.0), passing(1.4, tolerance=0.5), OK, "", 1.4, 1.0, 1.5),
    "failing after passing is violated": (
        stored(1.0),
        failing(0.5, 9.0),
        VIOLATED,
        FAILED_THAT_PASSED_BEFORE,
        None,
        1.0,
        None,
    ),
    "not run after passing is violated": (
        stored(1.0),
        Measurement("t", (), 0.1),
        VIOLATED,
        FAILED_THAT_PASSED_BEFORE,
        None,
        1.0,
        None,
    ),
    "failing on the first run just fails": (Baseline(), failing(0.5, 0.5), FAILED, "", None, None, None),
    "failing again while never passed just fails": (
        stored(None, passed=False),
        failing(0.5, 0.5),
        FAILED,
        "",
        None,
        None,
        None,
    ),
    "a first pass after failures sets the bar": (stored(None, passed=False), passing(2.0), SET, "", 2.0, 2.0, None),
}


@pytest.mark.parametrize(
    ("baseline", "run", "verdict", "reason", "median", "bar_after", "limit"), list(CASES.values()), ids=list(CASES)
)
def test_decision(
    baseline: Baseline,
    run: Measurement,
    verdict: str,
    reason: str,
    median: float | None,
    bar_after: float | None,
    limit: float | None,
):
    decision = decide_ratchet(baseline, [run], run_key="now", at=AT)
    (got,) = decision.verdicts
    assert (got.verdict, got.reason, got.median, got.bar_after, got.limit) == (
        verdict,
        reason,
        median,
        bar_after,
        limit,
    )
    bar = decision.baseline.bars["t"]
    assert bar.seconds == bar_after
    before = baseline.bars["t"].seconds if "t" in baseline.bars else None
    # The bar never loosens without a reset.
    assert before is None or bar.seconds is None or bar.seconds <= before
    # Whoever moved the bar is on record; a bar that stays keeps who set it.
    assert bar.set_by == ("now" if verdict in (SET, TIGHTENED) else baseline.bars.get("t", Bar(None, False)).set_by)


def test_a_test_dropped_from_the_workflow_after_passing_is_violated_and_keeps_its_bar():
    baseline = Baseline({"kept": Bar(1.0, True), "dropped": Bar(2.0, True), "never": Bar(None, False)})
    decision = decide_ratchet(baseline, [passing(1.0, name="kept")], run_key="now", at=AT)
    assert [(v.test, v.verdict, v.reason) for v in decision.verdicts] == [
        ("kept", OK, ""),
        ("dropped", VIOLATED, MISSING),
    ]
    assert decision.baseline.bars["dropped"].seconds == 2.0


def test_a_reset_needs_a_reason_drops_every_bar_and_is_recorded():
    baseline = Baseline({"t": Bar(0.1, True), "old": Bar(0.2, True)})
    with pytest.raises(ValueError, match=r"^a reset needs a reason$"):
        decide_ratchet(baseline, [passing(5.0)], run_key="now", at=AT, reset_reason="  ")
    decision = decide_ratchet(baseline, [passing(5.0)], run_key="now", at=AT, reset_reason="new hardware")
    assert [(v.test, v.verdict) for v in decision.verdicts] == [("t", SET)]  # "old" is no longer owed
    assert decision.baseline.bars == {"t": Bar(5.0, True, "now", AT)}
    assert decision.baseline.resets == (Reset("now", AT, "new hardware", {"t": 0.1, "old": 0.2}),)


def test_several_tests_decide_independently_in_order():
    baseline = Baseline({"a": Bar(1.0, True), "b": Bar(1.0, True)})
    runs = [passing(0.5, name="a"), passing(2.0, name="b"), passing(0.1, name="c")]
    decision = decide_ratchet(baseline, runs, run_key="now", at=AT)
    assert [(v.test, v.verdict) for v in decision.verdicts] == [("a", TIGHTENED), ("b", VIOLATED), ("c", SET)]
    assert [v.test for v in decision.violated] == ["b"] and [v.test for v in decision.failed] == ["b"]


def test_the_document_round_trips():
    baseline = Baseline(
        {"t": Bar(0.25, True, "r1", AT), "u": Bar(None, False, "", "")},
        (Reset("r0", AT, "moved clusters", {"t": 0.5}),),
    )
    document = baseline_to_json(baseline, workflow="w", destination="local", run_key="r1", at=AT)
    assert {k: document[k] for k in ("version", "workflow", "destination", "updated_by", "updated_at")} == {
        "version": 1,
        "workflow": "w",
        "destination": "local",
        "updated_by": "r1",
        "updated_at": AT,
    }
    assert document["tests"]["u"] == {"bar_seconds": None, "passed": False, "set_by": "", "set_at": ""}
    assert document["tests"]["t"] == {"bar_seconds": 0.25, "passed": True, "set_by": "r1", "set_at": AT}
    assert document["history"] == [
        {"event": "reset", "run_key": "r0", "at": AT, "reason": "moved clusters", "previous": {"t": 0.5}}
    ]
    assert parse_baseline(document) == baseline


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (None, "expected a baseline document of version 1"),
        ({"version": 2, "tests": {}}, "expected a baseline document of version 1"),
        ({"version": 1, "tests": []}, "expected `tests` as an object and `history` as a list"),
        ({"version": 1, "tests": {}, "history": {}}, "expected `tests` as an object and `history` as a list"),
        ({"version": 1, "tests": {"t": 0.5}}, "tests.t: expected {bar_seconds, passed, set_by, set_at}, found 0.5"),
        (
            {"version": 1, "tests": {"t": {"bar_seconds": "fast"}}},
            "tests.t: expected {bar_seconds, passed, set_by, set_at}, found {'bar_seconds': 'fast'}",
        ),
        ({"version": 1, "tests": {"t": {"bar_seconds": -1}}}, "tests.t: expected {bar_seconds, passed"),
        ({"version": 1, "tests": {"t": {"bar_seconds": True}}}, "tests.t: expected {bar_seconds, passed"),
        (
            {"version": 1, "tests": {}, "history": [{"event": "loosened"}]},
            "history: expected reset events, found {'event': 'loosened'}",
        ),
    ],
)
def test_a_document_this_code_did_not_write_is_refused_saying_what_it_expected(document: object, message: str):
    # The ledger shows this message to whoever must decide whether to reset.
    with pytest.raises(BaselineError, match=f"^{re.escape(message)}"):
        parse_baseline(document)


def test_a_bar_stored_as_never_passed_is_reported_on_a_failure_but_not_owed():
    # Not what this code writes (a bar with seconds has passed), but a document it accepts, say edited by hand.
    baseline = parse_baseline({"version": 1, "tests": {"t": {"bar_seconds": 1.5, "passed": False}}})
    decision = decide_ratchet(baseline, [failing(0.5, 0.5)], run_key="k", at=AT)
    assert [(v.verdict, v.bar_before, v.bar_after) for v in decision.verdicts] == [(FAILED, 1.5, 1.5)]
    assert decide_ratchet(baseline, [], run_key="k", at=AT).verdicts == ()


# --- the bar's history: each run decided on the baseline the run before stored, read back from its document ---


def next_run(
    baseline: Baseline, *runs: Measurement, key: str, reset: str | None = None
) -> tuple[dict[str, tuple[str, str]], Baseline]:
    """One run of the step: decide, store the document, and read it back as the next run will."""
    decision = decide_ratchet(baseline, runs, run_key=key, at=f"at-{key}", reset_reason=reset)
    document = baseline_to_json(decision.baseline, workflow="w", destination="local", run_key=key, at=f"at-{key}")
    return {v.test: (v.verdict, v.reason) for v in decision.verdicts}, parse_baseline(json.loads(json.dumps(document)))


@pytest.mark.parametrize(
    ("then", "verdict"),
    [
        (passing(1.0), (OK, "")),
        (passing(0.5), (TIGHTENED, "")),
        (passing(9.0), (VIOLATED, SLOWER_THAN_BAR)),
    ],
    ids=["ok", "tightened", "slower-than-bar"],
)
def test_a_test_that_passed_is_owed_by_every_later_run_whatever_its_last_verdict(
    then: Measurement, verdict: tuple[str, str]
):
    _, baseline = next_run(Baseline(), passing(1.0), key="r1")
    seen, baseline = next_run(baseline, then, key="r2")
    assert seen == {"t": verdict}
    # The bar still counts as passed: failing or leaving the workflow later is a violation, not a plain failure.
    assert next_run(baseline, failing(0.5, 0.5), key="r3")[0] == {"t": (VIOLATED, FAILED_THAT_PASSED_BEFORE)}
    assert next_run(baseline, key="r3")[0] == {"t": (VIOLATED, MISSING)}


def test_a_test_that_never_passed_owes_nothing_until_it_does():
    seen, baseline = next_run(Baseline(), failing(0.5, 0.5), key="r1")
    assert seen == {"t": (FAILED, "")}
    assert baseline.bars["t"] == Bar(None, False)
    first = decide_ratchet(Baseline(), [failing(0.5, 0.5)], run_key="r1", at=AT).baseline
    document = baseline_to_json(first, workflow="w", destination="local", run_key="r1", at=AT)
    assert document["tests"]["t"] == {"bar_seconds": None, "passed": False, "set_by": "", "set_at": ""}
    # Failing again is still a plain failure, and leaving the workflow is not reported at all.
    assert next_run(baseline, failing(0.5, 0.5), key="r2")[0] == {"t": (FAILED, "")}
    assert next_run(baseline, passing(1.0, name="other"), key="r2")[0] == {"other": (SET, "")}
    # Its first pass sets the bar, and from then on it is owed.
    seen, baseline = next_run(baseline, passing(2.0), key="r3")
    assert seen == {"t": (SET, "")} and baseline.bars["t"] == Bar(2.0, True, "r3", "at-r3")
    assert next_run(baseline, key="r4")[0] == {"t": (VIOLATED, MISSING)}


def test_a_violation_keeps_the_bar_and_who_set_it():
    _, baseline = next_run(Baseline(), passing(1.0), key="r1")
    for key, run in (("r2", passing(9.0)), ("r3", failing(0.5, 0.5)), ("r4", passing(1.05)), ("r5", None)):
        _, baseline = next_run(baseline, *([run] if run else []), key=key)
        assert baseline.bars["t"] == Bar(1.0, True, "r1", "at-r1"), key
    _, baseline = next_run(baseline, passing(0.9), key="r6")
    assert baseline.bars["t"] == Bar(0.9, True, "r6", "at-r6")


def test_each_verdict_names_the_bar_it_was_judged_against():
    runs = {
        "ok": passing(1.05),
        "tightened": passing(0.5),
        "slower": passing(2.0),
        "failed": failing(0.5, 0.5),
    }
    baseline = Baseline({name: Bar(1.0, True) for name in (*runs, "missing")})
    decision = decide_ratchet(baseline, [replace(run, name=name) for name, run in runs.items()], run_key="k", at=AT)
    assert {v.test: (v.bar_before, v.bar_after) for v in decision.verdicts} == {
        "ok": (1.0, 1.0),
        "tightened": (1.0, 0.5),
        "slower": (1.0, 1.0),
        "failed": (1.0, 1.0),
        "missing": (1.0, 1.0),
    }
    assert [v.to_json() for v in decision.verdicts if v.test == "slower"] == [
        {
            "test": "slower",
            "verdict": VIOLATED,
            "reason": SLOWER_THAN_BAR,
            "median_seconds": 2.0,
            "bar_before": 1.0,
            "bar_after": 1.0,
            "limit_seconds": 1.1,
        }
    ]
    assert [v.test for v in decision.failed] == ["slower", "failed", "missing"]
    assert [v.test for v in decision.violated] == ["slower", "failed", "missing"]


def test_a_plain_failure_is_failed_but_not_a_violation():
    decision = decide_ratchet(Baseline(), [failing(0.5, 0.5), passing(1.0, name="u")], run_key="k", at=AT)
    assert [v.test for v in decision.failed] == ["t"] and decision.violated == ()


def test_a_reset_forgets_what_was_owed_and_the_next_pass_sets_the_bar_afresh():
    _, baseline = next_run(Baseline(), passing(1.0), key="r1")
    seen, baseline = next_run(baseline, failing(0.5, 0.5), key="r2", reset="flaky cluster")
    assert seen == {"t": (FAILED, "")} and baseline.bars["t"] == Bar(None, False)
    assert baseline.resets == (Reset("r2", "at-r2", "flaky cluster", {"t": 1.0}),)
    assert next_run(baseline, key="r3")[0] == {}
    seen, baseline = next_run(baseline, passing(3.0), key="r3")
    assert seen == {"t": (SET, "")} and baseline.bars["t"].seconds == 3.0
    assert len(baseline.resets) == 1  # the history of resets is kept by every later run


def test_medians_and_limits_are_kept_to_the_microsecond():
    decision = decide_ratchet(stored(1.0), [passing(0.1234567, 0.2, 0.1, tolerance=0.1234567)], run_key="k", at=AT)
    (verdict,) = decision.verdicts
    assert (verdict.median, verdict.limit) == (0.123457, 1.123457)


def test_a_bar_of_zero_seconds_reads_back():
    # Rounding to the microsecond makes 0.0 from a call faster than half a microsecond.
    _, baseline = next_run(Baseline(), passing(0.0000004), key="r1")
    assert baseline.bars["t"] == Bar(0.0, True, "r1", "at-r1")
    assert next_run(baseline, passing(0.0000004), key="r2")[0] == {"t": (OK, "")}


def test_a_document_written_before_set_by_and_set_at_reads_with_them_empty():
    document = {"version": 1, "tests": {"t": {"bar_seconds": 2, "passed": True}}}
    assert parse_baseline(document) == Baseline({"t": Bar(2.0, True, "", "")})
    document = {"version": 1, "tests": {}, "history": [{"event": "reset"}]}
    assert parse_baseline(document).resets == (Reset("", "", "", {}),)
