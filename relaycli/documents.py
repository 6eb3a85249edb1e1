"""Local trigger files: read them, and check them as Relay would (catalog, then policy), launching nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import naming
from relay import policy as rules
from relay.catalog import Catalog
from relay.errors import InvalidTriggerError, PolicyDeniedError, Problem
from relay.ports import BlobStore
from relay.service import check_trigger, parse_document
from relay.triggers import Format, Trigger, format_for
from relaycli import policy
from relaycli.errors import CliError, UsageError
from relaycli.output import pairs, plural

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
    check: policy.PolicyCheck | None = None  # None: the policy was not checked (where it comes from is unknown)

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
        return pairs([("policy", source), ("tenant", whose), ("run key", key)]).splitlines()

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
    what it uses against the tenant's rules."""
    refused = policy.refusal(check.policy, check.origin) if check is not None else None
    if refused is not None:  # before the document is read, as the functions refuse it
        return Validation(None, refused.problems, refused.code, check)
    parsed = parse_document(document.data, document.format, document.path)
    if isinstance(parsed, InvalidTriggerError):
        return Validation(None, parsed.problems, parsed.code, check)
    try:
        check_trigger(Catalog(store, catalog_uri), parsed, document.path)
    except InvalidTriggerError as invalid:
        return Validation(parsed, invalid.problems, invalid.code, check)
    except ValueError as exc:  # a catalog entry that is not a compiled spec
        raise CliError(str(exc)) from None
    denied = policy.check(check.policy, check.origin, parsed, check.context) if check is not None else ()
    if denied:
        return Validation(parsed, denied, PolicyDeniedError.code, check)
    return Validation(parsed, (), None, check)


def problem_lines(validation: Validation) -> list[str]:
    return [f"  {problem}" for problem in validation.problems]
