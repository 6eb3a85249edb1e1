"""The runs board in a real headless Chromium, at a desktop's and a phone's width: no sideways scrolling, every
section shown, every text inside the page and large enough to read, and a screenshot of each kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.board import DeadLetter, DeadLetters
from relay.board_page import render_board
from relay.board_store import board_for, read_sources
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore
from tests.pipelines.ratchet.report_support import Browser, chromium
from tests.unit.board_support import HOSTILE, seed

pytestmark = pytest.mark.integration

RESULTS = "gs://results/relay"
LETTERS = DeadLetters(
    tuple(
        DeadLetter(f"49210618451234{n:02}", f"2026-11-2{n}T10:00:00.000Z", "15", about)
        for n, about in enumerate(
            (
                "gs://lab-data/assay/2026-11-21/plate-0042-with-a-rather-long-object-name-from-the-robot.json#17",
                f"inline json: {HOSTILE}",
            )
        )
    )
)
SECTIONS = {"operator": ["alerts", "runs", "queue", "rejections", "dead-letters"]}
SECTIONS["tenant"] = SECTIONS["operator"][:-1]
READABLE_PX = 12  # the smallest text on the page: the table cells' code (12.5 px)

# What the test asks of the page after layout: its widths, each section's box, every text's size and box.
MEASURE = """(() => {
  const page = document.documentElement, width = page.clientWidth;
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, parent = node.parentElement;
    if (!node.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(node);
    const r = range.getBoundingClientRect(), style = getComputedStyle(parent);
    texts.push({text: node.textContent.trim().slice(0, 60), size: parseFloat(style.fontSize), left: r.left,
                right: r.right, shown: style.display !== "none" && style.visibility !== "hidden" && r.width > 0});
  }
  return {client_width: width, scroll_width: page.scrollWidth,
          sections: [...document.querySelectorAll("section")].map((s) => {
            const r = s.getBoundingClientRect();
            return {id: s.id, height: r.height, left: r.left, right: r.right,
                    shown: getComputedStyle(s).display !== "none"};
          }),
          cells: [...document.querySelectorAll("td")].filter((c) => c.scrollWidth > c.clientWidth + 1)
                   .map((c) => c.textContent.slice(0, 60)),
          texts};
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    opened = Browser(chromium(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize("board", ["operator", "tenant"])
@pytest.mark.parametrize("width", [1280, 390], ids=["desktop", "phone"])
def test_the_board_reads_at_desktop_and_phone_width(browser: Browser, tmp_path: Path, width: int, board: str):
    store = MemoryBlobStore()
    seed(store, RESULTS, NOW)
    sources = read_sources(store, RESULTS)
    tenant = "assay" if board == "tenant" else None
    letters = LETTERS if tenant is None else None
    page = tmp_path / "board.html"
    page.write_text(
        render_board(board_for(sources, deployment="lab-prod", now=NOW, dead_letters=letters, tenant=tenant))
    )
    browser.open(page, width)
    measured: dict[str, Any] = browser.evaluate(MEASURE)
    shot_width, shot_height = browser.screenshot(tmp_path / f"board-{board}-{width}.png")
    assert shot_width == width and shot_height > 600, (shot_width, shot_height)
    assert measured["client_width"] == width
    assert measured["scroll_width"] <= width, f"the page scrolls sideways at {width} px: {measured['scroll_width']}"
    sections = measured["sections"]
    assert [s["id"] for s in sections] == SECTIONS[board]
    for section in sections:
        assert section["shown"] and section["height"] > 20, section
        assert section["left"] >= 0 and section["right"] <= width, section
    assert measured["cells"] == [], f"text overflows its cell at {width} px"
    shown = [t for t in measured["texts"] if t["shown"]]
    assert min(t["size"] for t in shown) >= READABLE_PX, sorted(shown, key=lambda t: t["size"])[:3]
    outside = [t["text"] for t in shown if t["left"] < 0 or t["right"] > width + 0.5]
    assert outside == [], f"text beyond the page's edge at {width} px"
    assert any("parameters.plate" in t["text"] for t in shown)  # a rejection's reason is on the page
