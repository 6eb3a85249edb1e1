"""What a ratchet run leaves behind: its history line, report.json, and a self-contained report.html. Pure."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from pipelines.steps.ratchet.baseline import FAILED, OK, VIOLATED, Decision, Measurement
from pipelines.steps.ratchet.stages import AlgorithmOutcome, BenchmarkOutcome

CHART_RUNS = 60  # the most recent runs drawn per test; the table and history.jsonl keep everything
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 260, 104, 16, 34, 44
# The chart scales with the page, its text with it: the style sets the text larger in the SVG's own units on a
# narrow screen, so that it stays readable on a phone. Layout is planned for the largest of those sizes.
_FONT_MAX = 22
_GOOD, _BAD, _BAR, _LINE = "#1a7f37", "#cf222e", "#0969da", "#57606a"
# The limit's swatch in the legend, drawn on the chart or held at its top edge alike.
_LIMIT_SWATCH = f'<span class="swatch line" style="border-color:{_BAD};border-top-style:dotted"></span>'
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
    title = f"Ratchet: {report['workflow']} on {report['destination'].get('name', '')}"
    state = "passed" if 200 <= int(report["status"]) < 300 else "failed"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="summary {state}"><strong>{state.upper()}</strong> (status {report["status"]}): '
        f"{escape(str(report['message']))}</p>",
        f'<p class="meta">Run <code>{escape(str(report["run_key"]))}</code> at {escape(str(report["at"]))}; '
        f"tolerance {report['parameters'].get('tolerance')}. Bar: the median latency a test may not exceed by "
        "more than its tolerance (and slack); it tightens when a run is faster and never loosens except through "
        "a reset with a reason.</p>",
        "<h2>Tests</h2>",
    ]
    for test in report["tests"]:
        parts.append(_test_section(test, history))
    if not report["tests"]:
        parts.append("<p>This workflow has no benchmark tests.</p>")
    parts.append("<h2>Algorithms</h2>")
    parts.append(_algorithms_table(report["algorithms"]))
    resets = [h for h in history if h.get("reset_reason")]
    if resets:
        parts.append("<h2>Resets</h2><ul>")
        parts += [
            f"<li>{escape(str(h.get('at')))} by <code>{escape(str(h.get('run_key')))}</code>: "
            f"{escape(str(h['reset_reason']))}</li>"
            for h in resets
        ]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _test_section(test: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
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
    note = _slack_note(test, verdict)
    rows = [
        ("Verdict", f'<span class="{"bad" if bad else "good"}">{escape(str(verdict.get("verdict")))}'
                    f"{escape(reason)}</span>"),
        ("Median", _seconds(verdict.get("median_seconds")) + _against_bar(verdict)),
        ("Bar", f"{_seconds(verdict.get('bar_before'))} → {_seconds(verdict.get('bar_after'))}"),
        ("Limit", _seconds(verdict.get("limit_seconds")) + (f'<p class="note">{escape(note)}</p>' if note else "")),
        ("Calls", f"{ok} of {len(calls)} succeeded (repeat {test['repeat']}, timeout {test['timeout']:g} s)"),
        ("Latencies", escape(latencies)),
    ]  # fmt: skip
    rows += [("Error", escape(e)) for e in errors[:5]]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section><h3>{escape(name)}</h3>{_chart(name, history)}<table class="kv">{table}</table></section>'


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


def _chart(name: str, history: Sequence[Mapping[str, Any]]) -> str:
    points = [(h, h["tests"][name]) for h in history if isinstance(h.get("tests"), dict) and name in h["tests"]]
    points = points[-CHART_RUNS:]
    if not points:
        return ""
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

    drawn: dict[str, str] = {}  # legend key -> its swatch, in drawing order: the legend lists only what is drawn
    svg = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(name)}: median latency per run against the bar">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{width}" height="{height}" fill="#f6f8fa"/>',
    ]
    for value in ticks:
        svg.append(f'<line x1="{_LEFT}" x2="{_LEFT + width}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>')
        svg.append(f'<text x="{_LEFT - 8}" y="{y(value):.1f}" dy="0.35em" text-anchor="end">{_seconds(value)}</text>')
    svg += _x_ticks([entry for entry, _ in points], x, _TOP + height)
    bar_path = _steps([(x(i), y(v)) if v is not None else None for i, v in enumerate(bars)], step)
    if bar_path:
        svg.append(f'<path class="bar" d="{bar_path}" fill="none" stroke="{_BAR}" stroke-width="2.5" '
                   'stroke-dasharray="8 4"/>')  # fmt: skip
        drawn["bar"] = f'<span class="swatch line" style="border-color:{_BAR};border-top-style:dashed"></span>bar'
    shown = [(x(i), y(v)) if v is not None and v <= top else None for i, v in enumerate(limits)]
    limit_path = _steps(shown, step)
    if limit_path:
        svg.append(f'<path class="limit" d="{limit_path}" fill="none" stroke="{_BAD}" stroke-width="2" '
                   'stroke-dasharray="2 4"/>')  # fmt: skip
        drawn["limit"] = _LIMIT_SWATCH + "limit"
    above = [(i, v) for i, v in enumerate(limits) if v is not None and v > top]
    if above:  # held along the top edge, where no point can hide it, its latest value above
        edge = _steps([(x(i), _TOP + 1.5) if v is not None and v > top else None for i, v in enumerate(limits)], step)
        svg.append(f'<path class="limit-off" d="{edge}" fill="none" stroke="{_BAD}" stroke-width="3" '
                   f'stroke-dasharray="2 4"><title>limit above the chart</title></path>')  # fmt: skip
        i, v = above[-1]
        right = x(i) > _LEFT + width / 2
        svg.append(
            f'<text x="{x(i) + (step / 2 if right else -step / 2):.1f}" y="{_TOP - 8}" '
            f'text-anchor="{"end" if right else "start"}" class="off">limit {_seconds(v)} ↑</text>'
        )
        drawn["limit-off"] = _LIMIT_SWATCH + "limit, above the chart: held at its top edge"
    line = [(x(i), y(v)) for i, v in enumerate(medians) if v is not None]
    if len(line) > 1:
        coordinates = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
        svg.append(f'<polyline class="median" points="{coordinates}" fill="none" stroke="{_LINE}" '
                   'stroke-width="1.5"/>')  # fmt: skip
    for i, ((entry, t), median) in enumerate(zip(points, medians, strict=True)):
        verdict = str(t.get("verdict"))
        failed = verdict in (VIOLATED, FAILED)
        tip = escape(
            f"{entry.get('at')} ({entry.get('run_key')}): {verdict}"
            + (f" {t.get('reason')}" if t.get("reason") else "")
            + f"; median {_seconds(median)}, bar {_seconds(t.get('bar_after'))}"
            + f", limit {_seconds(t.get('limit_seconds'))}"
        )
        if median is not None:
            kind, colour = ("fail", _BAD) if failed else ("pass", _GOOD)
            svg.append(f'<circle class="{kind}" cx="{x(i):.1f}" cy="{y(median):.1f}" r="6" fill="{colour}">'
                       f"<title>{tip}</title></circle>")  # fmt: skip
            label = "violated or failed" if failed else "passed"
            drawn.setdefault(kind, f'<span class="swatch" style="color:{colour}">●</span>{label}')
        else:  # failed or not run: no latency to plot, a cross on the axis instead
            cx, cy = x(i), _TOP + height - 8
            svg.append(
                f'<path class="nolatency" d="M{cx - 6:.1f},{cy - 6:.1f}L{cx + 6:.1f},{cy + 6:.1f}M{cx - 6:.1f},'
                f'{cy + 6:.1f}L{cx + 6:.1f},{cy - 6:.1f}" fill="none" stroke="{_BAD}" stroke-width="3">'
                f"<title>{tip}</title></path>"
            )
            drawn["nolatency"] = f'<span class="swatch" style="color:{_BAD}">✗</span>no latency (failed or not run)'
    svg.append("</svg>")
    order = ("bar", "limit", "limit-off", "pass", "fail", "nolatency")
    legend = "".join(f'<li data-item="{key}">{drawn[key]}</li>' for key in order if key in drawn)
    return f'<figure>{"".join(svg)}<ul class="legend">{legend}</ul></figure>'


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


def _x_ticks(entries: Sequence[Mapping[str, Any]], x: Callable[[int], float], axis: float) -> list[str]:
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
    out: list[str] = []
    last = ""
    for i in chosen:
        if labels[i] == last:
            continue
        last = labels[i]
        centre = min(max(x(i), _LEFT + widest / 2 - 12), _W - widest / 2)
        out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{axis}" y2="{axis + 5}" class="tick"/>')
        out.append(
            f'<text x="{centre:.1f}" y="{axis + 8}" dy="1em" text-anchor="middle" class="date">{escape(last)}</text>'
        )
    return out


def _nice_ticks(highest: float, target: int = 5) -> list[float]:
    """0 and evenly spaced round numbers (1, 2, 2.5 or 5 times a power of ten) up to at least `highest`."""
    if highest <= 0:
        return [0.0, 1.0]
    raw = highest / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(k * step, 12) for k in range(math.ceil(highest / step - 1e-9) + 1)]


def _algorithms_table(algorithms: Sequence[Mapping[str, Any]]) -> str:
    """One row per algorithm; the Stage and Error columns only when some algorithm has one. On a phone each row is
    a block of labelled lines (the style reads each cell's label from `data-label`)."""
    staged = any(a.get("stage") for a in algorithms)
    erred = any(a.get("error") for a in algorithms)
    columns = [
        "Algorithm",
        "State",
        *(["Stage"] if staged else []),
        "Validation",
        "Files",
        *(["Error"] if erred else []),
    ]
    rows = []
    for a in algorithms:
        state = "good" if a["state"] == "validated" else "bad"
        cells = {
            "Algorithm": ("name", f"<code>{escape(str(a['name']))}</code>"),
            "State": (state, escape(str(a["state"]))),
            "Stage": ("", escape(str(a["stage"]))),
            "Validation": ("", f"{_seconds(a['seconds'])} in {a['attempts']} attempt(s)"),
            "Files": ("", str(len(a["files"]))),
            "Error": ("error", escape(str(a["error"]))),
        }
        row = []
        for column in columns:
            css, text = cells[column]
            attribute = f' class="{css}"' if css else ""
            row.append(f'<td{attribute} data-label="{column}">{text}</td>')
        rows.append(f"<tr>{''.join(row)}</tr>")
    head = "".join(f"<th>{c}</th>" for c in columns)
    table = f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


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


# Chart text is in the SVG's units, which shrink with the chart: larger units on narrower screens keep it near
# 11-13 px on the screen (the chart is at most 720 px wide, one unit a pixel).
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:780px;padding:0 12px;
color:#1f2328;overflow-wrap:break-word}
h1{font-size:20px}h2{font-size:17px;margin-top:28px}h3{font-size:15px;margin:18px 0 4px}
.summary{padding:8px 12px;border-radius:6px}.summary.passed{background:#dafbe1}.summary.failed{background:#ffebe9}
.meta code{word-break:break-all}.meta,.note{color:#57606a}.note{margin:2px 0 0}
.good{color:#1a7f37}.bad{color:#cf222e;font-weight:600}
table{border-collapse:collapse;margin:6px 0}th,td{text-align:left;padding:3px 10px 3px 0;vertical-align:top}
th,table.grid td{white-space:nowrap}table.grid td.error,table.grid td.name{white-space:normal;overflow-wrap:anywhere}
table.grid td.error{min-width:12em}
.scroll{overflow-x:auto}table.grid th,table.grid td{border-bottom:1px solid #d0d7de;padding:4px 8px}
figure{margin:8px 0}svg.chart{display:block;width:100%;max-width:720px;height:auto;font-size:13px}
svg.chart text{fill:#57606a}svg.chart text.off{fill:#cf222e}
svg.chart .grid,svg.chart .tick{stroke:#d0d7de;stroke-width:1}code{font-size:12px}
ul.legend{list-style:none;display:flex;flex-wrap:wrap;gap:2px 16px;margin:4px 0 8px;padding:0;font-size:13px;
color:#57606a}ul.legend .swatch{display:inline-block;margin-right:5px}
ul.legend .swatch.line{width:22px;height:0;border-top:2.5px solid;vertical-align:middle}
@media (max-width:640px){svg.chart{font-size:17px}}
@media (max-width:480px){body{margin:12px auto}svg.chart{font-size:22px}
table.grid thead{display:none}table.grid,table.grid tbody,table.grid tr,table.grid td{display:block}
table.grid tr{border-bottom:1px solid #d0d7de;padding:4px 0}
table.grid td{border:0;padding:1px 0;white-space:normal;min-width:0;overflow-wrap:anywhere}
table.grid td:empty{display:none}table.grid td::before{content:attr(data-label) ": ";font-weight:600;color:#57606a}}
"""
