"""The runs board as one self-contained HTML page: relay.board's model laid out by board.html.jinja, beside this
module, with every value escaped by Jinja2's autoescape; the bars' geometry is computed here as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from relay.board import OTHER, STATES, Board, TenantRuns

if TYPE_CHECKING:
    from jinja2 import Template

# One colour per state, told apart at a glance; OTHER (states Relay does not know) gets the last.
COLOURS = {
    "queued": "#8250df",
    "launching": "#bf8700",
    "launched": "#0969da",
    "running": "#54aeff",
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#6e7781",
    "rejected": "#bc4c00",
    "skipped": "#afb8c1",
}
_OTHER = "#d0d7de"


@dataclass(frozen=True)
class _Segment:
    state: str
    count: int
    width: float  # percent of the bar
    swatch: int  # the index of its colour: a state's name, which a run's own result may set, never reaches the CSS


@dataclass(frozen=True)
class _Row:
    tenant: str
    counts: tuple[tuple[str, int], ...]
    total: int
    segments: tuple[_Segment, ...]
    label: str


def render_board(board: Board) -> str:
    """The board's page: no script, stylesheet, font or image is fetched, so it opens from a bucket or a file."""
    states = [*STATES, *([OTHER] if any(state == OTHER for t in board.tenants for state, _ in t.counts) else [])]
    title = "Relay runs board" + (f": {board.tenant}" if board.tenant is not None else "")
    return _template().render(
        title=title,
        board=board,
        states=states,
        rows=[_row(t, states) for t in board.tenants],
        colours=[(i, state, COLOURS.get(state, _OTHER)) for i, state in enumerate(states)],
    )


def _row(tenant: TenantRuns, states: list[str]) -> _Row:
    total = tenant.total
    segments = tuple(
        _Segment(state, n, round(100.0 * n / total, 3), states.index(state)) for state, n in tenant.counts if n
    )
    label = ", ".join(f"{s.count} {s.state}" for s in segments) or "no runs"
    return _Row(tenant.tenant, tenant.counts, total, segments, label)


@cache
def _template() -> Template:
    # Imported here: the functions load Jinja2 only on the tick that writes a board, the CLI only for `relay board`.
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # Autoescape for every value, whatever the file is called; a name the template uses but is not given is an
    # error, not an empty string.
    environment = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.get_template("board.html.jinja")
