"""The step I/O contract: `python -m pipelines.steps.<step> spec.json result.json`.

The spec is `{inputs, outputs, parameters, secrets}` (secrets as references, never values); the result is
`{message, outputs, metrics, status}` with an HTTP-like status: 2xx succeeded, anything else failed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.steps.errors import StepError
from pipelines.steps.gate import Gate, PolicyGate, gate_from_env
from relay.secrets import (
    Redactor,
    SecretNotFoundError,
    SecretResolver,
    is_reference,
    reference_paths,
    references,
    resolve_all,
    resolver_from_env,
    scrub_logs,
)

log = logging.getLogger("relay.step")


@dataclass(frozen=True)
class StepSpec:
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "parameters": dict(self.parameters),
            "secrets": dict(self.secrets),
        }


@dataclass(frozen=True)
class StepResult:
    message: str
    status: int
    outputs: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "outputs": dict(self.outputs),
            "metrics": dict(self.metrics),
            "status": self.status,
        }


def parse_spec(document: object) -> StepSpec:
    if not isinstance(document, Mapping):
        raise StepError(400, f"spec: expected a JSON object, found {type(document).__name__}")
    unknown = sorted(set(document) - {"inputs", "outputs", "parameters", "secrets"})
    if unknown:
        raise StepError(400, f"spec: expected only inputs, outputs, parameters, secrets; found {', '.join(unknown)}")
    parts = {
        name: {} if document.get(name) is None else document[name]
        for name in ("inputs", "outputs", "parameters", "secrets")
    }
    for name, value in parts.items():
        if not isinstance(value, Mapping):
            raise StepError(400, f"spec.{name}: expected an object, found {type(value).__name__}")
    for name, reference in parts["secrets"].items():
        if not is_reference(reference):
            raise StepError(400, f"spec.secrets.{name}: expected a secret:// reference, found a value (never pass one)")
    return StepSpec(**parts)


def spec_for(inputs: Mapping[str, Any], outputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> StepSpec:
    """A spec whose `secrets` asks for every reference the parameters hold; the policy decides which it gets."""
    found = {f"parameters.{path}": reference for path, reference in reference_paths(parameters)}
    return StepSpec(inputs=inputs, outputs=outputs, parameters=parameters, secrets=found)


def _closed_gate() -> Gate:
    return PolicyGate()  # no policy: nothing outside is allowed


@dataclass
class StepContext:
    """What a step may use besides its spec: the deployment's policy, and secrets (resolved only where the policy
    binds them, then redacted everywhere)."""

    resolver: SecretResolver
    gate: Gate = field(default_factory=_closed_gate)
    redact: Redactor = field(default_factory=Redactor)

    def resolve(self, value: Any, allowed: Mapping[str, str]) -> Any:
        """`value` with its secret references resolved; only references in `allowed` may be."""
        unlisted = sorted(set(references(value)) - set(allowed.values()))
        if unlisted:
            raise StepError(400, f"secret references not listed in spec.secrets: {', '.join(unlisted)}")
        try:
            resolved, values = resolve_all(value, self.resolver)
        except SecretNotFoundError as missing:
            raise StepError(424, str(missing)) from None  # a dependency the run needs is not there
        self.redact.add(values)
        return resolved


Step = Callable[[StepSpec, StepContext], StepResult]


def run_step(step: Step, spec: StepSpec, context: StepContext) -> StepResult:
    """Run `step`; any failure becomes a result, and no secret survives in it: its message, outputs and metrics are
    scrubbed here, the one place every result passes on its way to result.json and the run's record."""
    try:
        result = step(spec, context)
    except StepError as error:
        result = StepResult(message=str(error), status=error.status)
    except Exception as error:  # the step's own bugs and its clients' errors alike end as a 500 result
        result = StepResult(message=f"{type(error).__name__}: {error}", status=500)
    return StepResult(
        message=context.redact(result.message),
        status=result.status,
        outputs=_redacted(result.outputs, context.redact),
        metrics=_redacted(result.metrics, context.redact),
    )


def step_context(environ: Mapping[str, str]) -> StepContext:
    """The context a step runs with: secrets and the policy as the deployment's environment says.

    From here on, every log line the step's process makes is scrubbed of the secrets the context resolves.
    """
    context = StepContext(resolver=resolver_from_env(environ), gate=gate_from_env(environ))
    scrub_logs(context.redact)
    return context


def main(step: Step, argv: Sequence[str] | None = None) -> int:
    """CLI: read the spec, run the step, write the result; exit 0 on a 2xx status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m pipelines.steps.<step> spec.json result.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(args[0]), Path(args[1])
    try:
        context = step_context(os.environ)
        spec = parse_spec(json.loads(spec_path.read_text()))
    except (OSError, ValueError) as exc:
        result = StepResult(message=f"{spec_path}: cannot read the spec: {exc}", status=400)
    except StepError as error:
        result = StepResult(message=str(error), status=error.status)
    else:
        result = run_step(step, spec, context)
    result_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 0 if result.succeeded else 1


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """Every string in a JSON-like value, scrubbed (the structure and its numbers stay as they are)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(key)): _redacted(inner, redact) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(inner, redact) for inner in value]
    return value
