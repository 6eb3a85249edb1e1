"""report.html in a real headless Chromium, at a desktop's and a phone's width: screenshots of the expected size,
no sideways scrolling, every legend item drawn in its colour, chart text readable, date ticks apart."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines.ratchet.report_support import MEASURE, Browser, chromium, realistic_html

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    opened = Browser(chromium(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(("width", "runs"), [(1280, 8), (390, 8), (390, 1)], ids=["desktop", "phone", "first-run"])
def test_the_report_reads_at_desktop_and_phone_width(browser: Browser, tmp_path: Path, width: int, runs: int):
    page = realistic_html(tmp_path, runs)
    browser.open(page, width)
    measured: dict[str, Any] = browser.evaluate(MEASURE)
    shot_width, shot_height = browser.screenshot(tmp_path / f"report-{width}.png")
    assert shot_width == width and shot_height > 1500, (shot_width, shot_height)  # five or six charts and tables
    assert measured["client_width"] == width
    assert measured["scroll_width"] <= width, f"the page scrolls sideways at {width} px: {measured['scroll_width']}"
    assert measured["scrolled"] == [0], "the algorithms table does not fit: it scrolls sideways"
    assert len(measured["figures"]) == (6 if runs > 6 else 5)  # cold start: added by the seventh run
    for figure in measured["figures"]:
        for item in figure["legend"]:
            shown = [
                d for d in item["drawn"]
                if d["visible"] and d["inside"] and max(d["w"], d["h"]) >= 4 and d["colour"] == item["swatch"]
            ]  # fmt: skip
            assert shown, f"legend item {item['item']} is not drawn in its colour {item['swatch']}: {item['drawn']}"
        texts = figure["text"]
        assert min(t["size"] for t in texts) >= 10.5, [(t["text"], t["size"]) for t in texts]
        dates = sorted((t for t in texts if t["date"]), key=lambda t: t["left"])
        assert len(dates) >= min(figure["runs"], 3), [t["text"] for t in dates]  # more than first and last
        for left, right in itertools.pairwise(dates):
            assert left["right"] < right["left"], f"date ticks overlap at {width} px: {left['text']}, {right['text']}"
