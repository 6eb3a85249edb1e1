"""The runs board's page: self-contained, every value from a record escaped, a tenant's page naming no other's."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from markupsafe import escape

from relay.board import DeadLetter, DeadLetters
from relay.board_page import render_board
from relay.board_store import Sources, board_for, read_sources
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore
from tests.unit.board_support import HOSTILE, seed

RESULTS = "gs://results/relay"
LETTER = DeadLetter("4921061845123456", "2026-11-21T10:00:00+00:00", "15", f"inline json: {HOSTILE}")


class _Elements(HTMLParser):
    """Every element's tag and attributes, and the text of each <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def parsed(page: str) -> _Elements:
    elements = _Elements()
    elements.feed(page)
    return elements


@pytest.fixture
def sources() -> Sources:
    store = MemoryBlobStore()
    seed(store, RESULTS, NOW)
    return read_sources(store, RESULTS)


def test_hostile_text_from_records_is_escaped_wherever_it_shows(sources: Sources):
    deployment = f"lab-prod {HOSTILE}"
    page = render_board(board_for(sources, deployment=deployment, now=NOW, dead_letters=DeadLetters((LETTER,))))
    elements = parsed(page)
    assert [tag for tag, _ in elements.tags if tag in ("script", "img", "iframe", "object")] == []
    assert not any(name.startswith("on") for _, attrs in elements.tags for name in attrs)
    assert HOSTILE not in page
    escaped = str(escape(HOSTILE))  # as Jinja2's autoescape writes it
    # In a rejection's reason (twice: one per tenant), the absence's message, the dead letter and the deployment.
    assert page.count(escaped) == 2 + 1 + 1 + 1


def test_the_page_fetches_nothing_and_runs_no_script(sources: Sources):
    page = render_board(board_for(sources, deployment="lab-prod", now=NOW, dead_letters=None))
    elements = parsed(page)
    assert {tag for tag, _ in elements.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "ul", "li", "b", "section",
        "table", "thead", "tbody", "tr", "th", "td", "div", "span", "i",
    }  # fmt: skip
    assert not any(attrs.get("src") or attrs.get("href") for _, attrs in elements.tags)
    assert not re.search(r"@import|url\(", "".join(elements.styles))


def test_each_section_is_on_the_operators_page(sources: Sources):
    page = render_board(board_for(sources, deployment="lab-prod", now=NOW, dead_letters=DeadLetters((LETTER,))))
    sections = [attrs.get("id") for tag, attrs in parsed(page).tags if tag == "section"]
    assert sections == ["alerts", "runs", "queue", "rejections", "dead-letters"]
    assert "Generated at 2026-11-21T12:00:00.000Z" in page and "<code>lab-prod</code>" in page
    assert "4921061845123456" in page


def test_dead_letters_that_could_not_be_read_say_why(sources: Sources):
    note = "Could not read relay-dead-letter: no project"
    page = render_board(board_for(sources, deployment="d", now=NOW, dead_letters=DeadLetters(note=note)))
    assert note in page


def test_a_tenants_page_names_none_of_another_tenants_runs(sources: Sources):
    page = render_board(board_for(sources, deployment="lab-prod", now=NOW, dead_letters=None, tenant="imaging"))
    assert "imaging-rejected-0" in page
    assert "assay" not in page and "legacy" not in page and "nightly-plates" not in page
    assert [attrs.get("id") for tag, attrs in parsed(page).tags if tag == "section"] == [
        "alerts", "runs", "queue", "rejections"
    ]  # fmt: skip


def test_the_bars_widths_are_each_states_share(sources: Sources):
    page = render_board(board_for(sources, deployment="d", now=NOW, dead_letters=None, tenant="imaging"))
    widths = [float(w) for w in re.findall(r'style="width:([0-9.]+)%"', page)]
    assert widths == pytest.approx([100 * n / 11 for n in (1, 6, 1, 1, 2)], abs=0.001)  # running .. skipped, of 11 runs
    assert 'aria-label="1 running, 6 succeeded, 1 failed, 1 rejected, 2 skipped"' in page
