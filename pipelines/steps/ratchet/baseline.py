"""The ratchet: per test, a latency bar that only tightens, decided from the stored baseline and this run's calls.

Pure: no I/O and no clock; the step reads and writes the baseline document (`baseline_to_json`, `parse_baseline`).

A test *passes* when every one of its calls succeeded. Its figure is the median latency of its calls. Against a
stored bar, the limit is `bar x (1 + tolerance) + slack`:

- first pass (no bar yet)           -> `set`: the bar is the median
- passes, median below the bar      -> `tightened`: the bar becomes the median
- passes, median within the limit   -> `ok`: the bar stays
- passes, median above the limit    -> `violated` (`slower-than-bar`): the bar stays
- fails, and had passed before      -> `violated` (`failed-that-passed-before`)
- fails, never passed               -> `failed`
- not run, and had passed before    -> `violated` (`missing`): dropping a test would loosen the bar silently

The bar never loosens: only a reset (with a reason, kept in the baseline's history) drops the bars, and the run
that resets sets them afresh.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SET, OK, TIGHTENED, FAILED, VIOLATED = "set", "ok", "tightened", "failed", "violated"
FAILED_THAT_PASSED_BEFORE = "failed-that-passed-before"
SLOWER_THAN_BAR = "slower-than-bar"
MISSING = "missing"
FORMAT_VERSION = 1
_PRECISION = 6  # microseconds: finer figures are noise, and JSON stays readable


class BaselineError(ValueError):
    """The stored baseline document is not one this code wrote."""


@dataclass(frozen=True)
class Bar:
    """One test's bar: the median latency (seconds) a later run may not exceed beyond its tolerance."""

    seconds: float | None  # None until the test first passes
    passed: bool  # whether the test has passed since the bar was (re)set
    set_by: str = ""  # the run key that last moved the bar
    set_at: str = ""


@dataclass(frozen=True)
class Reset:
    """A reset of every bar, with the reason someone gave; kept in the baseline for good."""

    run_key: str
    at: str
    reason: str
    previous: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    bars: Mapping[str, Bar] = field(default_factory=dict)
    resets: tuple[Reset, ...] = ()


@dataclass(frozen=True)
class Call:
    ok: bool
    seconds: float


@dataclass(frozen=True)
class Measurement:
    """This run's calls of one test (none when it could not run), and the tolerance that applies to it."""

    name: str
    calls: tuple[Call, ...]
    tolerance: float
    slack: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.calls) and all(c.ok for c in self.calls)

    @property
    def median(self) -> float | None:
        return round(statistics.median(c.seconds for c in self.calls), _PRECISION) if self.passed else None


@dataclass(frozen=True)
class Verdict:
    test: str
    verdict: str  # set, ok, tightened, failed, violated
    reason: str = ""  # for violated: failed-that-passed-before, slower-than-bar, missing
    median: float | None = None
    bar_before: float | None = None
    bar_after: float | None = None
    limit: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict in (SET, OK, TIGHTENED)

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "verdict": self.verdict,
            "reason": self.reason,
            "median_seconds": self.median,
            "bar_before": self.bar_before,
            "bar_after": self.bar_after,
            "limit_seconds": self.limit,
        }


@dataclass(frozen=True)
class Decision:
    verdicts: tuple[Verdict, ...]
    baseline: Baseline

    @property
    def violated(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict == VIOLATED)

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)


def decide_ratchet(
    baseline: Baseline, runs: Iterable[Measurement], *, run_key: str, at: str, reset_reason: str | None = None
) -> Decision:
    """The verdict on each test and the baseline to store next.

    Args:
        baseline: the stored bars (an empty Baseline on the first run).
        runs: this run's tests, in the workflow's order.
        run_key: recorded as what moved a bar.
        at: this run's timestamp, recorded likewise.
        reset_reason: drop every bar first (recording why), so this run sets them afresh; None keeps them.
    """
    if reset_reason is not None:
        if not reset_reason.strip():
            raise ValueError("a reset needs a reason")
        previous = {name: bar.seconds for name, bar in baseline.bars.items()}
        baseline = Baseline(bars={}, resets=(*baseline.resets, Reset(run_key, at, reset_reason, previous)))
    bars = dict(baseline.bars)
    verdicts: list[Verdict] = []
    seen: set[str] = set()
    for run in runs:
        seen.add(run.name)
        verdict, bar = _decide_one(run, bars.get(run.name), run_key, at)
        verdicts.append(verdict)
        bars[run.name] = bar
    for name, bar in baseline.bars.items():
        if name not in seen and bar.passed:
            verdicts.append(Verdict(name, VIOLATED, MISSING, bar_before=bar.seconds, bar_after=bar.seconds))
    return Decision(tuple(verdicts), Baseline(bars=bars, resets=baseline.resets))


def _decide_one(run: Measurement, bar: Bar | None, run_key: str, at: str) -> tuple[Verdict, Bar]:
    before = bar.seconds if bar is not None else None
    if not run.passed:
        if bar is not None and bar.passed:
            return Verdict(run.name, VIOLATED, FAILED_THAT_PASSED_BEFORE, bar_before=before, bar_after=before), bar
        return Verdict(run.name, FAILED, bar_before=before, bar_after=before), bar or Bar(None, False)
    median = run.median
    assert median is not None  # a passed run has calls
    if before is None:
        return Verdict(run.name, SET, median=median, bar_after=median), Bar(median, True, run_key, at)
    assert bar is not None
    limit = round(before * (1 + run.tolerance) + run.slack, _PRECISION)
    if median > limit:
        verdict = Verdict(run.name, VIOLATED, SLOWER_THAN_BAR, median, before, before, limit)
        return verdict, Bar(before, True, bar.set_by, bar.set_at)
    if median < before:
        return Verdict(run.name, TIGHTENED, "", median, before, median, limit), Bar(median, True, run_key, at)
    return Verdict(run.name, OK, "", median, before, before, limit), Bar(before, True, bar.set_by, bar.set_at)


def baseline_to_json(baseline: Baseline, *, workflow: str, destination: str, run_key: str, at: str) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "workflow": workflow,
        "destination": destination,
        "updated_by": run_key,
        "updated_at": at,
        "tests": {
            name: {"bar_seconds": bar.seconds, "passed": bar.passed, "set_by": bar.set_by, "set_at": bar.set_at}
            for name, bar in baseline.bars.items()
        },
        "history": [
            {"event": "reset", "run_key": r.run_key, "at": r.at, "reason": r.reason, "previous": dict(r.previous)}
            for r in baseline.resets
        ],
    }


def parse_baseline(document: object) -> Baseline:
    """The Baseline a stored document holds; BaselineError when it is not one."""
    if not isinstance(document, Mapping) or document.get("version") != FORMAT_VERSION:
        raise BaselineError(f"expected a baseline document of version {FORMAT_VERSION}")
    tests, history = document.get("tests"), document.get("history", [])
    if not isinstance(tests, Mapping) or not isinstance(history, list):
        raise BaselineError("expected `tests` as an object and `history` as a list")
    bars: dict[str, Bar] = {}
    for name, entry in tests.items():
        if not isinstance(entry, Mapping) or not _is_bar(entry.get("bar_seconds")):
            raise BaselineError(f"tests.{name}: expected {{bar_seconds, passed, set_by, set_at}}, found {entry!r}")
        seconds = entry.get("bar_seconds")
        bars[str(name)] = Bar(
            seconds=None if seconds is None else float(seconds),
            passed=bool(entry.get("passed")),
            set_by=str(entry.get("set_by", "")),
            set_at=str(entry.get("set_at", "")),
        )
    resets = []
    for event in history:
        if not isinstance(event, Mapping) or event.get("event") != "reset":
            raise BaselineError(f"history: expected reset events, found {event!r}")
        previous = event.get("previous") or {}
        resets.append(
            Reset(str(event.get("run_key", "")), str(event.get("at", "")), str(event.get("reason", "")), previous)
        )
    return Baseline(bars=bars, resets=tuple(resets))


def _is_bar(value: object) -> bool:
    """None (no pass yet) or a number of seconds, 0 included."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0)
