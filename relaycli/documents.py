"""Local trigger files: read them, and check them against the catalog as Relay would, launching nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.catalog import Catalog
from relay.errors import InvalidTriggerError, Problem
from relay.ports import BlobStore
from relay.service import check_trigger, parse_document
from relay.triggers import Format, Trigger, format_for
from relaycli.errors import CliError, UsageError
from relaycli.output import plural

FORMATS: tuple[Format, ...] = ("json", "yaml")


@dataclass(frozen=True)
class TriggerFile:
    """A trigger document read from the disk, and the format it is decoded with."""

    path: str
    data: bytes
    format: Format


@dataclass(frozen=True)
class Validation:
    """What Relay would make of a document: its trigger if it parses, and every problem found."""

    trigger: Trigger | None
    problems: tuple[Problem, ...] = ()
    code: str | None = None  # the rejection code Relay would record

    @property
    def valid(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.trigger is not None and self.valid:
            return f"valid: {self.trigger.pipeline} with {plural(len(self.trigger.parameters), 'parameter')}"
        return f"invalid: {plural(len(self.problems), 'problem')} ({self.code})"

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "pipeline": self.trigger.pipeline if self.trigger else None,
            "parameters": len(self.trigger.parameters) if self.trigger else 0,
            "code": self.code,
            "problems": [{"field": p.field, "expected": p.expected, "found": p.found} for p in self.problems],
        }


def read_trigger_file(path: str, fmt: Format | None = None, *, named: str | None = None) -> TriggerFile:
    """The file's bytes, decoded as `fmt`, else as the suffix of `named` (or of the file) implies."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: expected a trigger file, found no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: expected a trigger file, found a folder") from None
    except OSError as exc:
        raise CliError(f"{path}: expected a readable trigger file, found {exc.strerror or exc}") from None
    name = named or path
    chosen = fmt or format_for(name)
    if chosen is None:
        raise UsageError(
            f"{name}: expected a trigger name ending in .json, .yaml or .yml (Relay skips other names), "
            f"found {Path(name).suffix or 'no suffix'}"
        )
    return TriggerFile(path=path, data=data, format=chosen)


def validate(document: TriggerFile, store: BlobStore, catalog_uri: str) -> Validation:
    """The document, then its pipeline in the catalog, then its parameters: the checks Relay runs before a claim."""
    parsed = parse_document(document.data, document.format, document.path)
    if isinstance(parsed, InvalidTriggerError):
        return Validation(None, parsed.problems, parsed.code)
    try:
        check_trigger(Catalog(store, catalog_uri), parsed, document.path)
    except InvalidTriggerError as invalid:
        return Validation(parsed, invalid.problems, invalid.code)
    except ValueError as exc:  # a catalog entry that is not a compiled spec
        raise CliError(str(exc)) from None
    return Validation(parsed)


def problem_lines(validation: Validation) -> list[str]:
    return [f"  {problem}" for problem in validation.problems]
