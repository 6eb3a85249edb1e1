"""report.html without a browser: what the charts draw and say, read from the markup. A realistic history of
eight runs over six days, each decided by the real ratchet (report_support)."""

from __future__ import annotations

import re

import pytest

from pipelines.steps.ratchet.report import _nice_ticks, render_html
from tests.pipelines.ratchet.report_support import realistic_report
from tests.pipelines.ratchet.support import assert_self_contained


def sections() -> dict[str, str]:
    html = render_html(*realistic_report())
    assert_self_contained(html)
    parts = re.findall(r"<section><h3>(.*?)</h3>(.*?)</section>", html, re.S)
    return dict(parts)


def legend(section: str) -> list[str]:
    return re.findall(r'<li data-item="([a-z-]+)">', section)


def test_the_legend_lists_only_what_the_chart_draws():
    for name, section in sections().items():
        for item in legend(section):
            assert f'class="{item}"' in section, f"{name}: the legend shows {item}, the chart draws none"
    drawn = {name: legend(section) for name, section in sections().items()}
    assert drawn["short text"] == ["bar", "limit", "pass"]
    assert drawn["summary of a long report"] == ["bar", "limit", "pass", "nolatency"]
    assert drawn["ping"] == ["bar", "limit-off", "pass"]
    assert drawn["cold start"] == ["bar", "limit", "pass"]
    assert drawn["never passed"] == ["nolatency"]


def test_a_limit_of_one_run_is_a_segment_not_a_point():
    # cold start: its first run had no limit, its second one; drawn across the second run's slot.
    section = sections()["cold start"]
    [path] = re.findall(r'<path class="limit" d="([^"]+)"', section)
    start, end = re.match(r"M([\d.]+),[\d.]+H([\d.]+)", path).groups()  # type: ignore[union-attr]
    assert float(end) > float(start)


def test_a_limit_far_above_the_latencies_is_marked_at_the_top_with_its_value():
    ping = sections()["ping"]
    assert 'class="limit"' not in ping and ping.count('class="limit-off"') == 1
    [edge] = re.findall(r'<path class="limit-off" d="([^"]+)"', ping)
    assert edge.startswith("M") and "V" not in edge  # held along the top edge from the second run on
    assert ">limit 262 ms ↑</text>" in ping  # the bar 10.8 ms x 1.1 + the slack 250 ms


def test_a_test_within_its_limit_only_through_the_slack_says_so():
    short = sections()["short text"]
    assert ">ok</span>" in short and "295 ms (55% slower than the bar)" in short
    assert "limit = bar 190 ms + slack 250 ms + tolerance 10% (19 ms): the slack dominates the tolerance." in short
    assert "within the limit only through the slack: tolerance alone allows 209 ms" in short
    # Over its bar by 5 %, inside the tolerance: the slack dominates still, but the verdict needs no excuse.
    document = sections()["document"]
    assert "the slack dominates the tolerance" in document and "only through the slack" not in document


def test_the_x_axis_shows_run_dates_not_run_keys():
    chart = sections()["short text"]
    labels = re.findall(r'class="date">([^<]+)</text>', chart)
    assert labels == ["Nov 20", "Nov 22", "Nov 24", "Nov 25"]
    assert "ratchet-0" not in re.sub(r"<title>.*?</title>", "", chart)  # run keys only in the points' tooltips


@pytest.mark.parametrize(
    ("highest", "ticks"),
    [
        (0.31, [0.0, 0.1, 0.2, 0.3, 0.4]),
        (1.27, [0.0, 0.5, 1.0, 1.5]),
        (0.0126, [0.0, 0.005, 0.01, 0.015]),
        (0.0, [0.0, 1.0]),
    ],
)
def test_y_ticks_are_round_numbers_from_zero_past_the_highest_figure(highest: float, ticks: list[float]):
    assert _nice_ticks(highest) == ticks


def test_the_algorithms_table_has_stage_and_error_columns_only_when_an_algorithm_has_them():
    report, history = realistic_report()
    failing = render_html(report, history).partition("<h2>Algorithms</h2>")[2]
    assert "<th>Stage</th>" in failing and "<th>Error</th>" in failing
    report["algorithms"] = [a for a in report["algorithms"] if a["state"] == "validated"]
    passing = render_html(report, history).partition("<h2>Algorithms</h2>")[2]
    assert "<th>Stage</th>" not in passing and "<th>Error</th>" not in passing
    assert passing.count("<th>") - passing.count("<th>Stage</th>") == failing.count("<th>") - 2


def test_report_json_carries_each_test_s_tolerance_and_slack():
    report, _ = realistic_report()
    assert {(t["name"], t["tolerance"], t["slack"]) for t in report["tests"]} >= {("short text", 0.1, 0.25)}
