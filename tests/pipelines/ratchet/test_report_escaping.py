"""report.html from the side of whoever writes a workflow, names a test or an algorithm, or makes a call fail: a
string in any field the page shows, numbers included, comes out as text, never as markup."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from pipelines.steps.ratchet.report import render_html
from tests.pipelines.ratchet.report_support import realistic_report


def hostile(field: str) -> str:
    """Markup that would add an element and an event handler, quoting out of an attribute either way."""
    return f"<b id=\"{field}\" onmouseover='alert(1)'>{field} &amp; \"'</b>"


class Page(HTMLParser):
    """The elements, attributes and text nodes of a page, as a browser's parser would find them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def shows(self, text: str) -> bool:
        return any(text in t for t in self.texts) or any(text in value for _, value in self.attributes)


def hostile_report() -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The realistic report with a hostile string in every field the page shows; the fields' names."""
    report, history = realistic_report()
    name = hostile("test name")
    fields = ["workflow", "destination", "run key", "at", "message", "tolerance", "test name", "verdict", "reason"]
    fields += ["call error", "not run", "repeat", "algorithm", "state", "stage", "algorithm error", "attempts"]
    fields += ["history at", "history run key", "reset reason", "history verdict"]
    report.update(workflow=hostile("workflow"), run_key=hostile("run key"), at=hostile("at"))
    report.update(message=hostile("message"), parameters={"tolerance": hostile("tolerance")})
    report["destination"] = {"kind": "local", "name": hostile("destination")}
    [test] = [t for t in report["tests"] if t["name"] == "short text"]
    test.update(name=name, repeat=hostile("repeat"), not_run=hostile("not run"))
    test["ratchet"] = {**test["ratchet"], "verdict": hostile("verdict"), "reason": hostile("reason")}
    test["calls"][0] = {**test["calls"][0], "ok": False, "error": hostile("call error")}
    algorithm = report["algorithms"][-1]
    algorithm.update(name=hostile("algorithm"), state=hostile("state"), stage=hostile("stage"))
    algorithm.update(error=hostile("algorithm error"), attempts=hostile("attempts"))
    for entry in history:
        entry["tests"][name] = {**entry["tests"].pop("short text"), "verdict": hostile("history verdict")}
    history[-1].update(at=hostile("history at"), run_key=hostile("history run key"))
    history[2]["reset_reason"] = hostile("reset reason")
    return report, history, fields


def test_a_hostile_string_in_every_field_is_shown_as_text_not_markup():
    report, history, fields = hostile_report()
    page = Page(render_html(report, history))
    assert "b" not in page.tags, "a field's markup became an element"
    assert not {"id", "onmouseover"} & {name for name, _ in page.attributes}, "a field's markup became an attribute"
    missing = [field for field in fields if not page.shows(hostile(field))]
    assert not missing, f"not shown intact, as text: {missing}"
    # Quoted out of no attribute: the test name stays whole in the chart's label, which is an attribute.
    assert ("aria-label", f"{hostile('test name')}: median latency per run against the bar") in page.attributes
