"""What a ratchet run leaves behind: its history line, report.json, and a self-contained report.html. Pure.

report.html is laid out by report.html.jinja, beside this module, with every value escaped by Jinja2's autoescape;
what is drawn where (the charts' coordinates, paths and legend) is computed here and handed to it as plain values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Template

from pipelines.steps.ratchet.baseline import FAILED, OK, VIOLATED, Decision, Measurement
from pipelines.steps.ratchet.stages import AlgorithmOutcome, BenchmarkOutcome
from relay import html

CHART_RUNS = 60  # the most recent runs drawn per test; the table and history.jsonl keep everything
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 260, 104, 16, 34, 44
# The chart scales with the page, its text with it: the style sets the text larger in the SVG's own units on a
# narrow screen, so that it stays readable on a phone. Layout is planned for the largest of those sizes.
_FONT_MAX = 22
_GOOD, _BAD, _BAR, _LINE = "#1a7f37", "#cf222e", "#0969da", "#57606a"
_LIMIT_ON_CHART = 1.6  # a limit up to this many times the highest median or bar is drawn; beyond, marked off chart


def history_entry(
    *,
    run_key: str,
    at: str,
    status: int,
    tolerance: float,
    reset_reason: str | None,
    algorithms: Sequence[AlgorithmOutcome],
    tests: Sequence[BenchmarkOutcome],
    decision: Decision,
) -> dict[str, Any]:
    """One line of history.jsonl: enough to draw every test's latency against its bar over the runs."""
    outcomes = {t.name: t for t in tests}
    return {
        "run_key": run_key,
        "at": at,
        "status": status,
        "tolerance": tolerance,
        "reset_reason": reset_reason,
        "algorithms": {a.name: a.state for a in algorithms},
        "tests": {
            v.test: {
                **v.to_json(),
                "calls": len(outcomes[v.test].calls) if v.test in outcomes else 0,
                "failed_calls": sum(not c.ok for c in outcomes[v.test].calls) if v.test in outcomes else 0,
            }
            for v in decision.verdicts
        },
    }


def report_document(
    *,
    workflow: str,
    destination: Mapping[str, Any],
    run_key: str,
    at: str,
    status: int,
    message: str,
    parameters: Mapping[str, Any],
    algorithms: Sequence[AlgorithmOutcome],
    tests: Sequence[BenchmarkOutcome],
    runs: Sequence[Measurement],
    decision: Decision,
    links: Mapping[str, str],
) -> dict[str, Any]:
    """report.json: this run in full, every call included, and each test's tolerance and slack."""
    verdicts = {v.test: v.to_json() for v in decision.verdicts}
    margins = {m.name: {"tolerance": m.tolerance, "slack": m.slack} for m in runs}
    return {
        "workflow": workflow,
        "destination": dict(destination),
        "run_key": run_key,
        "at": at,
        "status": status,
        "message": message,
        "parameters": dict(parameters),
        "algorithms": [a.to_json() for a in algorithms],
        "tests": [{**t.to_json(), **margins.get(t.name, {}), "ratchet": verdicts.get(t.name)} for t in tests],
        "ratchet": [v.to_json() for v in decision.verdicts],
        "links": dict(links),
    }


def render_html(report: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    """report.html: per test, its latency over the runs against its bar as an inline SVG chart, then tables.

    Self-contained (no script, stylesheet, font or image is fetched), so it opens from a bucket or a mail.
    """
    algorithms = report["algorithms"]
    return _template().render(
        title=f"Ratchet: {report['workflow']} on {report['destination'].get('name', '')}",
        state="passed" if 200 <= int(report["status"]) < 300 else "failed",
        status=report["status"],
        message=report["message"],
        run_key=report["run_key"],
        at=report["at"],
        tolerance=report["parameters"].get("tolerance"),
        tests=[_test_view(test, history) for test in report["tests"]],
        staged=any(a.get("stage") for a in algorithms),
        erred=any(a.get("error") for a in algorithms),
        algorithms=[_algorithm_view(a) for a in algorithms],
        resets=[h for h in history if h.get("reset_reason")],
    )


@cache
def _template() -> Template:
    colours = {"bar": _BAR, "bad": _BAD, "line": _LINE}
    return html.autoescaped(Path(__file__).parent, "report.html.jinja", {"colours": colours})


@dataclass(frozen=True)
class _Row:
    """One line of a test's table: its text, in a span of class `css` when set, and a note under it."""

    label: str
    text: str
    css: str = ""
    note: str = ""


@dataclass(frozen=True)
class _TestView:
    name: str
    chart: _ChartView | None
    rows: tuple[_Row, ...]


@dataclass(frozen=True)
class _Tick:
    """A y gridline and its label, or a date under the x axis: a line at `position` and text centred at `label_at`."""

    position: str
    label_at: str
    label: str


@dataclass(frozen=True)
class _Mark:
    """One run's median: a circle (pass or fail) at cx, cy, or, with no latency, a cross drawn by `path`."""

    kind: str
    tip: str
    colour: str
    cx: str = ""
    cy: str = ""
    path: str = ""


@dataclass(frozen=True)
class _OffChart:
    """The latest limit above the chart, written at its top edge."""

    path: str
    x: str
    y: int
    anchor: str
    text: str


@dataclass(frozen=True)
class _LegendItem:
    """A legend entry: a line swatch (`line` is its border style) or a symbol, in `colour`, then the label."""

    key: str
    colour: str
    label: str
    line: str = ""
    symbol: str = ""


# Legend entries in the order they are listed; a chart lists only those it draws.
_LEGEND = (
    _LegendItem("bar", _BAR, "bar", line="dashed"),
    _LegendItem("limit", _BAD, "limit", line="dotted"),
    _LegendItem("limit-off", _BAD, "limit, above the chart: held at its top edge", line="dotted"),
    _LegendItem("pass", _GOOD, "passed", symbol="●"),
    _LegendItem("fail", _BAD, "violated or failed", symbol="●"),
    _LegendItem("nolatency", _BAD, "no latency (failed or not run)", symbol="✗"),
)


@dataclass(frozen=True)
class _ChartView:
    """One test's chart, every coordinate computed: the template places these and draws nothing of its own."""

    name: str
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    right: int
    axis: int
    tick_end: int
    date_y: int
    y_label_x: int
    y_ticks: tuple[_Tick, ...]
    x_ticks: tuple[_Tick, ...]
    bar: str
    limit: str
    off_chart: _OffChart | None
    median: str
    marks: tuple[_Mark, ...]
    legend: tuple[_LegendItem, ...]


def _test_view(test: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> _TestView:
    name = str(test["name"])
    verdict = test.get("ratchet") or {}
    calls = test.get("calls") or []
    ok = sum(1 for c in calls if c["ok"])
    bad = verdict.get("verdict") in (VIOLATED, FAILED)
    reason = f" ({verdict.get('reason')})" if verdict.get("reason") else ""
    errors = sorted({str(c["error"]) for c in calls if c.get("error")})
    if test.get("not_run"):
        errors.insert(0, f"not run: {test['not_run']}")
    latencies = ", ".join(_seconds(c["seconds"]) + ("" if c["ok"] else " ✗") for c in calls) or "none"
    rows = [
        _Row("Verdict", f"{verdict.get('verdict')}{reason}", css="bad" if bad else "good"),
        _Row("Median", _seconds(verdict.get("median_seconds")) + _against_bar(verdict)),
        _Row("Bar", f"{_seconds(verdict.get('bar_before'))} → {_seconds(verdict.get('bar_after'))}"),
        _Row("Limit", _seconds(verdict.get("limit_seconds")), note=_slack_note(test, verdict)),
        _Row("Calls", f"{ok} of {len(calls)} succeeded (repeat {test['repeat']}, timeout {test['timeout']:g} s)"),
        _Row("Latencies", latencies),
    ]
    rows += [_Row("Error", e) for e in errors[:5]]
    return _TestView(name, _chart(name, history), tuple(rows))


def _against_bar(verdict: Mapping[str, Any]) -> str:
    median, bar = verdict.get("median_seconds"), verdict.get("bar_before")
    if not (_number(median) and _number(bar)) or not bar:
        return ""
    change = (median - bar) / bar
    return f" ({abs(change):.0%} {'slower' if change > 0 else 'faster'} than the bar)" if round(change, 2) else ""


def _slack_note(test: Mapping[str, Any], verdict: Mapping[str, Any]) -> str:
    """Why the limit is what it is, when the slack and not the tolerance sets it: a test well over its bar can
    still be ok, and the page says so rather than leave a green verdict unexplained."""
    bar, limit, median = (_value(verdict, k) for k in ("bar_before", "limit_seconds", "median_seconds"))
    tolerance, slack = _value(test, "tolerance"), _value(test, "slack")
    if bar is None or limit is None or tolerance is None or not slack:
        return ""
    room = bar * tolerance
    if slack <= room:
        return ""
    note = (
        f"limit = bar {_seconds(bar)} + slack {_seconds(slack)} + tolerance {tolerance:.0%} "
        f"({_seconds(room)}): the slack dominates the tolerance."
    )
    if verdict.get("verdict") == OK and median is not None and median > bar + room:
        note += f" This run is within the limit only through the slack: tolerance alone allows {_seconds(bar + room)}."
    return note


def _chart(name: str, history: Sequence[Mapping[str, Any]]) -> _ChartView | None:
    points = [(h, h["tests"][name]) for h in history if isinstance(h.get("tests"), dict) and name in h["tests"]]
    points = points[-CHART_RUNS:]
    if not points:
        return None
    medians = [_value(t, "median_seconds") for _, t in points]
    bars = [_value(t, "bar_after") for _, t in points]
    limits = [_value(t, "limit_seconds") for _, t in points]
    figures = [v for v in medians + bars if v is not None]
    highest = max(figures, default=0.0)
    # Scaled to the latencies and bars; a limit far above them (padded with slack) would flatten them, so it is
    # drawn only when near, and marked at the top edge with its value otherwise.
    near = [v for v in limits if v is not None and (not highest or v <= highest * _LIMIT_ON_CHART)]
    ticks = _nice_ticks(max(figures + near, default=0.0) * 1.05)
    top = ticks[-1]
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    step = width / len(points)

    def x(i: int) -> float:
        return _LEFT + step * (i + 0.5)

    def y(seconds: float) -> float:
        return _TOP + height - seconds / top * height

    drawn: set[str] = set()  # legend keys: the legend lists only what is drawn
    bar_path = _steps([(x(i), y(v)) if v is not None else None for i, v in enumerate(bars)], step)
    if bar_path:
        drawn.add("bar")
    limit_path = _steps([(x(i), y(v)) if v is not None and v <= top else None for i, v in enumerate(limits)], step)
    if limit_path:
        drawn.add("limit")
    above = [(i, v) for i, v in enumerate(limits) if v is not None and v > top]
    off_chart = None
    if above:  # held along the top edge, where no point can hide it, its latest value above
        edge = _steps([(x(i), _TOP + 1.5) if v is not None and v > top else None for i, v in enumerate(limits)], step)
        i, v = above[-1]
        right = x(i) > _LEFT + width / 2
        anchor, x_text = ("end", x(i) + step / 2) if right else ("start", x(i) - step / 2)
        off_chart = _OffChart(edge, _f(x_text), _TOP - 8, anchor, f"limit {_seconds(v)} ↑")
        drawn.add("limit-off")
    line = [(x(i), y(v)) for i, v in enumerate(medians) if v is not None]
    median_points = " ".join(f"{px:.1f},{py:.1f}" for px, py in line) if len(line) > 1 else ""
    marks = []
    for i, ((entry, t), median) in enumerate(zip(points, medians, strict=True)):
        verdict = str(t.get("verdict"))
        failed = verdict in (VIOLATED, FAILED)
        tip = (
            f"{entry.get('at')} ({entry.get('run_key')}): {verdict}"
            + (f" {t.get('reason')}" if t.get("reason") else "")
            + f"; median {_seconds(median)}, bar {_seconds(t.get('bar_after'))}"
            + f", limit {_seconds(t.get('limit_seconds'))}"
        )
        if median is not None:
            kind, colour = ("fail", _BAD) if failed else ("pass", _GOOD)
            marks.append(_Mark(kind, tip, colour, cx=_f(x(i)), cy=_f(y(median))))
        else:  # failed or not run: no latency to plot, a cross on the axis instead
            kind, cx, cy = "nolatency", x(i), _TOP + height - 8
            x0, x1, y0, y1 = _f(cx - 6), _f(cx + 6), _f(cy - 6), _f(cy + 6)
            cross = f"M{x0},{y0}L{x1},{y1}M{x0},{y1}L{x1},{y0}"
            marks.append(_Mark(kind, tip, _BAD, path=cross))
        drawn.add(kind)
    return _ChartView(
        name=name,
        width=_W,
        height=_H,
        left=_LEFT,
        top=_TOP,
        plot_width=width,
        plot_height=height,
        right=_LEFT + width,
        axis=_TOP + height,
        tick_end=_TOP + height + 5,
        date_y=_TOP + height + 8,
        y_label_x=_LEFT - 8,
        y_ticks=tuple(_Tick(_f(y(value)), _f(y(value)), _seconds(value)) for value in ticks),
        x_ticks=_x_ticks([entry for entry, _ in points], x),
        bar=bar_path,
        limit=limit_path,
        off_chart=off_chart,
        median=median_points,
        marks=tuple(marks),
        legend=tuple(item for item in _LEGEND if item.key in drawn),
    )


def _steps(points: Sequence[tuple[float, float] | None], step: float) -> str:
    """An SVG path: each value held across its run's slot, joined to the next by a vertical line.

    Every value gets a slot's width, so a test's first limit (one point) is drawn too; None breaks the line.
    """
    half = step / 2
    path: list[str] = []
    previous: tuple[float, float] | None = None
    for point in [*points, None]:
        if point is None:
            if previous is not None:
                path.append(f"H{previous[0] + half:.1f}")
        elif previous is None:
            path.append(f"M{point[0] - half:.1f},{point[1]:.1f}")
        else:
            path.append(f"H{point[0] - half:.1f}" + (f"V{point[1]:.1f}" if point[1] != previous[1] else ""))
        previous = point
    return "".join(path)


def _x_ticks(entries: Sequence[Mapping[str, Any]], x: Callable[[int], float]) -> tuple[_Tick, ...]:
    """Run dates under the axis: as many evenly spread labels as fit at the largest text size, none repeated."""
    times = [_time(e.get("at")) for e in entries]
    known = [t for t in times if t is not None]
    same_day = len({t.date() for t in known}) <= 1
    labels = [
        (f"{t:%b} {t.day}, {t:%H:%M}" if same_day else f"{t:%b} {t.day}") if t is not None else _short(e.get("run_key"))
        for e, t in zip(entries, times, strict=True)
    ]
    widest = max(len(label) for label in labels) * 0.6 * _FONT_MAX + 24
    span = _W - _LEFT - _RIGHT
    count = max(1, min(len(entries), int(span / (1.5 * widest)) + 1))
    chosen = sorted({round(k * (len(entries) - 1) / max(count - 1, 1)) for k in range(count)})
    out: list[_Tick] = []
    last = ""
    for i in chosen:
        if labels[i] == last:
            continue
        last = labels[i]
        centre = min(max(x(i), _LEFT + widest / 2 - 12), _W - widest / 2)
        out.append(_Tick(_f(x(i)), _f(centre), last))
    return tuple(out)


def _nice_ticks(highest: float, target: int = 5) -> list[float]:
    """0 and evenly spaced round numbers (1, 2, 2.5 or 5 times a power of ten) up to at least `highest`."""
    if highest <= 0:
        return [0.0, 1.0]
    raw = highest / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(k * step, 12) for k in range(math.ceil(highest / step - 1e-9) + 1)]


@dataclass(frozen=True)
class _AlgorithmView:
    """One row of the algorithms table, as text; the template leaves out the Stage and Error columns when no
    algorithm has one, and on a phone shows each row as a block of labelled lines (labels from `data-label`)."""

    name: str
    state: str
    css: str
    stage: str
    validation: str
    files: str
    error: str


def _algorithm_view(algorithm: Mapping[str, Any]) -> _AlgorithmView:
    return _AlgorithmView(
        name=str(algorithm["name"]),
        state=str(algorithm["state"]),
        css="good" if algorithm["state"] == "validated" else "bad",
        stage=str(algorithm["stage"]),
        validation=f"{_seconds(algorithm['seconds'])} in {algorithm['attempts']} attempt(s)",
        files=str(len(algorithm["files"])),
        error=str(algorithm["error"]),
    )


def _value(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: object) -> str:
    if not _number(value):
        return "n/a"
    seconds = float(value)  # type: ignore[arg-type]
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(run_key: object) -> str:
    text = str(run_key)
    return text if len(text) <= 12 else text[:11] + "…"


def _f(coordinate: float) -> str:
    """A coordinate as the SVG gets it: to a tenth of a unit."""
    return f"{coordinate:.1f}"
