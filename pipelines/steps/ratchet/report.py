"""What a ratchet run leaves behind: its history line, report.json, and a self-contained report.html. Pure."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from pipelines.steps.ratchet.baseline import FAILED, VIOLATED, Decision
from pipelines.steps.ratchet.stages import AlgorithmOutcome, BenchmarkOutcome

CHART_RUNS = 60  # the most recent runs drawn per test; the table and history.jsonl keep everything
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 220, 64, 16, 14, 54
_GOOD, _BAD, _BAR, _LINE = "#1a7f37", "#cf222e", "#0969da", "#57606a"


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
    decision: Decision,
    links: Mapping[str, str],
) -> dict[str, Any]:
    """report.json: this run in full, every call included."""
    verdicts = {v.test: v.to_json() for v in decision.verdicts}
    return {
        "workflow": workflow,
        "destination": dict(destination),
        "run_key": run_key,
        "at": at,
        "status": status,
        "message": message,
        "parameters": dict(parameters),
        "algorithms": [a.to_json() for a in algorithms],
        "tests": [{**t.to_json(), "ratchet": verdicts.get(t.name)} for t in tests],
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
    rows = [
        ("Verdict", f'<span class="{"bad" if bad else "good"}">{escape(str(verdict.get("verdict")))}'
                    f"{escape(reason)}</span>"),
        ("Median", _seconds(verdict.get("median_seconds"))),
        ("Bar", f"{_seconds(verdict.get('bar_before'))} → {_seconds(verdict.get('bar_after'))}"),
        ("Limit", _seconds(verdict.get("limit_seconds"))),
        ("Calls", f"{ok} of {len(calls)} succeeded (repeat {test['repeat']}, timeout {test['timeout']:g} s)"),
        ("Latencies", escape(latencies)),
    ]  # fmt: skip
    rows += [("Error", escape(e)) for e in errors[:5]]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section><h3>{escape(name)}</h3>{_chart(name, history)}<table class="kv">{table}</table></section>'


def _chart(name: str, history: Sequence[Mapping[str, Any]]) -> str:
    points = [(h, h["tests"][name]) for h in history if isinstance(h.get("tests"), dict) and name in h["tests"]]
    points = points[-CHART_RUNS:]
    if not points:
        return ""
    # Scaled to the latencies and bars: a limit padded with slack would flatten them; it is drawn clamped.
    figures = [v for _, t in points for v in (t.get("median_seconds"), t.get("bar_after")) if _number(v)]
    top = max(figures, default=0.0) * 1.15 or 1.0
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    step = width / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return _LEFT + (i * step if len(points) > 1 else width / 2)

    def y(seconds: float) -> float:
        return _TOP + height - min(seconds, top) / top * height

    svg = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{escape(name)}: median latency per run against the bar">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{width}" height="{height}" fill="#f6f8fa"/>',
    ]
    for fraction in (0, 0.5, 1):
        value = top / 1.15 * fraction
        svg.append(f'<line x1="{_LEFT}" x2="{_LEFT + width}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>')
        svg.append(f'<text x="{_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_seconds(value)}</text>')
    bar = [(x(i), y(t["bar_after"])) for i, (_, t) in enumerate(points) if isinstance(t.get("bar_after"), int | float)]
    if bar:
        # A step line: the bar holds from one run until the next run moves it.
        path = [f"M{bar[0][0]:.1f},{bar[0][1]:.1f}"]
        for (_, y0), (x1, y1) in itertools.pairwise(bar):
            path.append(f"H{x1:.1f}V{y1:.1f}" if y1 != y0 else f"H{x1:.1f}")
        svg.append(f'<path d="{"".join(path)}" fill="none" stroke="{_BAR}" stroke-width="2" stroke-dasharray="6 3"/>')
    limits = [(x(i), y(t["limit_seconds"])) for i, (_, t) in enumerate(points) if _number(t.get("limit_seconds"))]
    if limits:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in limits)
        svg.append(f'<polyline points="{line}" fill="none" stroke="{_BAD}" stroke-width="1" stroke-dasharray="2 3"/>')
    medians = [(x(i), y(t["median_seconds"])) for i, (_, t) in enumerate(points) if _number(t.get("median_seconds"))]
    if len(medians) > 1:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in medians)
        svg.append(f'<polyline points="{line}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>')
    for i, (entry, t) in enumerate(points):
        verdict = str(t.get("verdict"))
        colour = _BAD if verdict in (VIOLATED, FAILED) else _GOOD
        tip = (
            f"{entry.get('run_key')} ({entry.get('at')}): {verdict}"
            + (f" {t.get('reason')}" if t.get("reason") else "")
            + f"; median {_seconds(t.get('median_seconds'))}, bar {_seconds(t.get('bar_after'))}"
        )
        if _number(t.get("median_seconds")):
            cy = y(t["median_seconds"])
            svg.append(
                f'<circle cx="{x(i):.1f}" cy="{cy:.1f}" r="4.5" fill="{colour}"><title>{escape(tip)}</title></circle>'
            )
        else:  # failed or not run: no latency to plot, a cross on the axis instead
            cx, cy = x(i), _TOP + height - 6
            svg.append(
                f'<path d="M{cx - 5:.1f},{cy - 5:.1f}L{cx + 5:.1f},{cy + 5:.1f}M{cx - 5:.1f},{cy + 5:.1f}'
                f'L{cx + 5:.1f},{cy - 5:.1f}" stroke="{_BAD}" stroke-width="2.5"><title>{escape(tip)}</title></path>'
            )
    first, last = points[0][0], points[-1][0]
    # Run keys under the axis, the legend on a line of its own below them.
    svg.append(f'<text x="{_LEFT}" y="{_H - 30}">{escape(_short(first.get("run_key")))}</text>')
    if len(points) > 1:
        svg.append(
            f'<text x="{_LEFT + width}" y="{_H - 30}" text-anchor="end">{escape(_short(last.get("run_key")))}</text>'
        )
    svg.append(
        f'<text x="{_LEFT + width / 2:.1f}" y="{_H - 10}" text-anchor="middle" class="legend">'
        f'<tspan fill="{_BAR}">- - bar</tspan>   <tspan fill="{_BAD}">··· limit</tspan>   '
        f'<tspan fill="{_GOOD}">● passed</tspan>   '
        f'<tspan fill="{_BAD}">● violated/failed   ✗ no latency</tspan></text>'
    )
    svg.append("</svg>")
    return "".join(svg)


def _algorithms_table(algorithms: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>Algorithm</th><th>State</th><th>Stage</th><th>Validation</th><th>Files</th><th>Error</th></tr>"
    rows = []
    for a in algorithms:
        css = "good" if a["state"] == "validated" else "bad"
        rows.append(
            f'<tr><td><code>{escape(str(a["name"]))}</code></td><td class="{css}">{escape(str(a["state"]))}</td>'
            f"<td>{escape(str(a['stage']))}</td><td>{_seconds(a['seconds'])} in {a['attempts']} attempt(s)</td>"
            f"<td>{len(a['files'])}</td><td>{escape(str(a['error']))}</td></tr>"
        )
    return f'<table class="grid">{head}{"".join(rows)}</table>'


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: object) -> str:
    if not _number(value):
        return "n/a"
    seconds = float(value)  # type: ignore[arg-type]
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def _short(run_key: object) -> str:
    text = str(run_key)
    return text if len(text) <= 28 else text[:25] + "…"


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:780px;color:#1f2328}
h1{font-size:20px}h2{font-size:17px;margin-top:28px}h3{font-size:15px;margin:18px 0 4px}
.summary{padding:8px 12px;border-radius:6px}.summary.passed{background:#dafbe1}.summary.failed{background:#ffebe9}
.meta{color:#57606a}.good{color:#1a7f37}.bad{color:#cf222e;font-weight:600}
table{border-collapse:collapse;margin:6px 0}th,td{text-align:left;padding:3px 10px 3px 0;vertical-align:top}
table.grid th,table.grid td{border-bottom:1px solid #d0d7de;padding:4px 8px}
svg.chart{max-width:100%;height:auto;font-size:11px}svg.chart text{fill:#57606a}
svg.chart .grid{stroke:#d0d7de;stroke-width:1}code{font-size:12px}
"""
