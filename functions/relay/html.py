"""HTML pages from Jinja2 templates, every value escaped: the runs board's and the ratchet report's one setup."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template


def autoescaped(folder: Path, name: str, values: Mapping[str, Any] | None = None) -> Template:
    """The template `name` in `folder`, `values` its globals. Autoescape for every value, whatever the file is
    called; a name the template uses but is not given is an error, not an empty string. Whitespace is the
    template's own: it trims what its layout adds."""
    # Imported here: the functions load Jinja2 only on the tick that writes a board, the CLI only for a page.
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(folder),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals.update(values or {})
    return environment.get_template(name)
