"""Local trigger files: read them, and check them as Relay would (catalog, then policy), launching nothing."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relay import naming
from relay import policy as rules
from relay.catalog import Catalog
from relay.chain_checks import check_chain
from relay.errors import InvalidTriggerError, PolicyDeniedError, Problem
from relay.ports import BlobStore
from relay.service import EMPTY_OBJECT, check_trigger, parse_document
from relay.triggers import Format, Trigger, TriggerLoader, format_for, strict_json
from relaycli import policy
from relaycli.config import CliConfig, Context
from relaycli.errors import CliError, UsageError
from relaycli.output import PLAIN, Paint, pairs, plural

FORMATS: tuple[Format, ...] = ("json", "yaml")
# An empty trigger file never becomes a run: Relay skips the zero-byte object, and only `relay runs` shows the skip.
SKIPPED = "skipped"
EMPTY_FILE = Problem(
    "(document)", f"a trigger document: Relay skips a {EMPTY_OBJECT}, no run, only a skip record", "an empty file"
)


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
    check: policy.PolicyCheck | None = None  # None: the policy was not checked (where it comes from is unknown)
    # Lines shown under a problem: where in the file a syntax error is, or the name that was probably meant.
    notes: Mapping[Problem, tuple[str, ...]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def run_key(self) -> str | None:
        """The run key the trigger chose, in its tenant's namespace; None when Relay derives one on arrival."""
        if self.trigger is None or not self.trigger.run_key or self.check is None:
            return None
        if policy.refusal(self.check.policy, self.check.origin) is not None:
            return None  # refused for its origin: filed under a digest, its own key is never used
        return rules.scoped_run_key(self.check.tenant, self.trigger.run_key)

    def policy_lines(self) -> list[str]:
        """Which policy, which tenant, which run key; or that the policy was not checked, and how to check it."""
        if self.check is None:
            return ["policy  not checked: say where the trigger comes from (--bucket B [--name N] or --topic T)"]
        check, tenant = self.check, self.check.tenant
        if check.policy.source:
            source = check.policy.source
            whose = tenant.name if tenant else f"none: no tenant takes triggers from {check.origin.uri}"
        else:
            source = "none: no tenant, so no source, destination, secret, cluster or code location is allowed"
            whose = "none"
        pipeline = self.trigger.pipeline if self.trigger is not None else naming.UNKNOWN_PIPELINE
        key = self.run_key or f"{pipeline}-<digest of {check.origin.identity}>"
        if self.code == SKIPPED:
            key = "none: Relay skips a zero-byte object"
        return pairs([("policy", source), ("tenant", whose), ("run key", key)]).splitlines()

    def summary(self) -> str:
        if self.trigger is not None and self.valid:
            return f"valid: {self.trigger.pipeline} with {plural(len(self.trigger.parameters), 'parameter')}"
        if self.code == SKIPPED:
            return "skipped: an empty file never becomes a run"
        return f"invalid: {plural(len(self.problems), 'problem')} ({self.code})"

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "pipeline": self.trigger.pipeline if self.trigger else None,
            "parameters": len(self.trigger.parameters) if self.trigger else 0,
            "code": self.code,
            "problems": [{"field": p.field, "expected": p.expected, "found": p.found} for p in self.problems],
            "policy": None if self.check is None else self._policy_json(self.check),
        }

    def _policy_json(self, check: policy.PolicyCheck) -> dict[str, Any]:
        tenant = check.tenant
        return {
            "source": check.policy.source or None,
            "origin": check.origin.uri,
            "tenant": tenant.name if tenant else None,
            "run_key": self.run_key,  # null: derived from the delivery when it arrives
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


def validate(
    document: TriggerFile, store: BlobStore, catalog_uri: str, check: policy.PolicyCheck | None = None
) -> Validation:
    """The checks Relay runs before a claim, in its order, stopping where it stops: its origin (with a policy, a
    tenant must take triggers from there), the document, its pipeline and parameters against the catalog, then
    what it uses against the tenant's rules, then its chain. An empty file sent as an object is skipped before all
    of them."""
    if not document.data and (check is None or not check.origin.topic):
        return Validation(None, (EMPTY_FILE,), SKIPPED, check)
    refused = policy.refusal(check.policy, check.origin) if check is not None else None
    if refused is not None:  # before the document is read, as the functions refuse it
        return Validation(None, refused.problems, refused.code, check)
    parsed = parse_document(document.data, document.format, document.path)
    if isinstance(parsed, InvalidTriggerError):
        where = syntax_position(document)
        notes = {p: where for p in parsed.problems if p.field == "(document)" and p.expected.startswith("valid ")}
        return Validation(None, parsed.problems, parsed.code, check, notes if where else {})
    catalog = Catalog(store, catalog_uri, show_location=True)
    try:
        check_trigger(catalog, parsed, document.path)
    except InvalidTriggerError as invalid:
        notes = _suggestions(parsed, invalid, catalog, store, catalog_uri)
        return Validation(parsed, invalid.problems, invalid.code, check, notes)
    except ValueError as exc:  # a catalog entry that is not a compiled spec
        raise CliError(str(exc)) from None
    denied = policy.check(check.policy, check.origin, parsed, check.context) if check is not None else ()
    if denied:
        return Validation(parsed, denied, PolicyDeniedError.code, check)
    try:
        deployed, tenant = (check.policy, check.tenant) if check is not None else (rules.NO_POLICY, None)
        check_chain(catalog, deployed, tenant, parsed, document.path)
    except InvalidTriggerError as invalid:
        return Validation(parsed, invalid.problems, invalid.code, check)
    return Validation(parsed, (), None, check)


def checked_before_sending(
    context: Context,
    config: CliConfig,
    document: TriggerFile,
    origin: policy.Origin,
    verb: str,
    *,
    validated: bool,
) -> rules.Policy:
    """The deployed policy, read before anything is sent: it decides the run key, and a policy that cannot be read
    stops the functions too. With `validated`, a CliError naming each problem unless Relay would run `document`."""
    deployed = policy.load_policy(context, config)
    if validated:
        catalog = config.require_catalog()
        check = policy.PolicyCheck(deployed, origin, policy.decision_context(config))
        validation = validate(document, context.blob_store(config, catalog), catalog, check)
        if not validation.valid:
            lines = problem_lines(validation, context.paint_errors)
            raise CliError(f"{document.path}: not {verb}: {validation.summary()}", lines)
    return deployed


def refuse_empty(document: TriggerFile, verb: str) -> None:
    """A CliError for an empty file sent as an object, with or without validation: the run key it would be
    given names a run that never exists."""
    if not document.data:
        skipped = Validation(None, (EMPTY_FILE,), SKIPPED)
        raise CliError(f"{document.path}: not {verb}: {skipped.summary()}", problem_lines(skipped))


def problem_lines(validation: Validation, paint: Paint = PLAIN) -> list[str]:
    """`  field: expected ..., found ...` per problem, each followed by its notes."""
    lines = []
    for problem in validation.problems:
        lines.append(f"  {paint.problem(problem.field)}: expected {problem.expected}, found {problem.found}")
        lines.extend(
            f"    {paint.hint(note) if note.startswith('did you mean') else note}"
            for note in validation.notes.get(problem, ())
        )
    return lines


def syntax_position(document: TriggerFile) -> tuple[str, ...]:
    """Where a JSON or YAML syntax error is: the line before, the line itself, and a caret under the column.

    The problem a record holds is one line (it is also a log field); a person at a terminal needs to see the spot.
    """
    try:
        text = document.data.decode("utf-8")
    except UnicodeDecodeError:
        return ()
    line = column = -1
    try:
        if document.format == "json":
            strict_json(text)
        else:
            yaml.load(text, Loader=TriggerLoader)
    except json.JSONDecodeError as error:
        line, column = error.lineno - 1, error.colno - 1
    except yaml.MarkedYAMLError as error:
        if error.problem_mark is not None:
            line, column = error.problem_mark.line, error.problem_mark.column
    except (ValueError, TypeError, yaml.YAMLError, RecursionError):
        pass  # no position to show (a duplicate key's message names it)
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return ()
    number = len(str(line + 1))
    shown = [f"{n + 1:>{number}} | {lines[n]}" for n in range(max(line - 1, 0), line + 1)]
    return (f"line {line + 1}, column {column + 1}:", *shown, f"{'':>{number}} | {' ' * column}^")


def _suggestions(
    trigger: Trigger, invalid: InvalidTriggerError, catalog: Catalog, store: BlobStore, catalog_uri: str
) -> dict[Problem, tuple[str, ...]]:
    """ "did you mean" for a pipeline name the catalog lacks, and for parameters the pipeline does not declare."""
    notes: dict[Problem, tuple[str, ...]] = {}
    for problem in invalid.problems:
        if invalid.code == "unknown_pipeline" and problem.field == "pipeline":
            names = catalog_names(store, catalog_uri)
            close = difflib.get_close_matches(trigger.pipeline, names, n=1)
            listed = f"the catalog has {', '.join(names) or 'no pipelines'}"
            notes[problem] = (f"did you mean {close[0]}? ({listed})" if close else listed,)
        elif problem.field.startswith("parameters.") and problem.found == "an unknown name":
            declared = sorted(catalog.get(trigger.pipeline, trigger_uri="").inputs)  # read already: it was checked
            close = difflib.get_close_matches(problem.field.removeprefix("parameters."), declared, n=1)
            if close:
                notes[problem] = (f"did you mean {close[0]}?",)
    return notes


def catalog_names(store: BlobStore, catalog_uri: str) -> list[str]:
    """The pipelines a catalog holds: its <name>.yaml entries, the policy beside them left out."""
    prefix = catalog_uri.rstrip("/") + "/"
    names = []
    for uri in store.list(prefix):
        name = uri.removeprefix(prefix)
        if "/" not in name and name.endswith(".yaml") and name != f"{naming.POLICY_ENTRY}.yaml":
            names.append(name.removesuffix(".yaml"))
    return sorted(names)
