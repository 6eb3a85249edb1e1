"""The pipeline catalog: compiled KFP v2 specs, and parameter checks against their root inputs."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from relay import naming, secrets
from relay.errors import BlobNotFoundError, InvalidTriggerError, Problem
from relay.ports import BlobStore
from relay.triggers import RESERVED_PARAMETERS, SafeLoader, describe_value

NO_SPEC = "expected a compiled KFP v2 pipeline spec, found no pipelineInfo/root document"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EXPECTED = {
    "STRING": "a string",
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "a boolean",
    "LIST": "a list",
    "STRUCT": "a mapping",
}


@dataclass(frozen=True)
class InputSpec:
    """One root input parameter of a compiled pipeline."""

    name: str
    type: str
    required: bool


@dataclass(frozen=True)
class PipelineDefinition:
    """A compiled pipeline as the catalog holds it."""

    name: str
    uri: str
    package: bytes  # the compiled YAML as stored, for backends that upload a file
    spec: Mapping[str, Any]  # the PipelineSpec document
    inputs: Mapping[str, InputSpec]

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output parameters the pipeline declares: what a run's result may hold under `outputs`."""
        declared = self.spec.get("root", {}).get("outputDefinitions", {}).get("parameters", {})
        return tuple(declared) if isinstance(declared, Mapping) else ()

    @property
    def declares_reserved(self) -> tuple[str, ...]:
        return tuple(name for name in RESERVED_PARAMETERS if name in self.inputs)


def pipeline_spec(documents: Iterable[object]) -> dict[str, Any] | None:
    """The PipelineSpec of a compiled KFP v2 YAML's documents (a platform spec may follow it); None (NO_SPEC) if
    none is one: for the catalog that reads a package and for `relay compile`, which stamps it."""
    return next((d for d in documents if isinstance(d, dict) and "pipelineInfo" in d and "root" in d), None)


def parse_pipeline_package(name: str, uri: str, package: bytes) -> PipelineDefinition:
    """Read a compiled KFP v2 YAML (the PipelineSpec document, optionally followed by a platform spec)."""
    # In C where PyYAML has libyaml (the same data): a package is read on an instance's first event for its pipeline,
    # and the pure-Python parser took 3-7x as long (13 ms for the bench's 4 KB package, more for a large one).
    spec = pipeline_spec(yaml.load_all(package, Loader=SafeLoader))
    if spec is None:
        raise ValueError(f"{uri}: {NO_SPEC}")
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    inputs = {
        param: InputSpec(
            name=param,
            type=str(definition.get("parameterType", "STRING")),
            required="defaultValue" not in definition and not definition.get("isOptional"),
        )
        for param, definition in declared.items()
    }
    return PipelineDefinition(name=name, uri=uri, package=package, spec=spec, inputs=inputs)


def check_parameters(pipeline: PipelineDefinition, parameters: Mapping[str, Any]) -> list[Problem]:
    """Every way the trigger's parameters fail the pipeline's root input definitions."""
    problems = []
    for name, value in parameters.items():
        field = f"parameters.{name}"
        spec = pipeline.inputs.get(name)
        if spec is None or name in RESERVED_PARAMETERS:
            declared = ", ".join(sorted(set(pipeline.inputs) - set(RESERVED_PARAMETERS))) or "none"
            problems.append(Problem(field, f"a parameter of {pipeline.name} ({declared})", "an unknown name"))
        elif not _matches(spec.type, value):
            expected = _EXPECTED.get(spec.type, spec.type)
            if spec.type == "NUMBER_INTEGER" and _matches("NUMBER_DOUBLE", value) and float(value).is_integer():
                expected = f"an integer from {INT64_MIN} to {INT64_MAX} (KFP integers are int64)"
            problems.append(Problem(field, expected, describe_value(value)))
        elif secrets.is_reference(value) and not secrets.well_formed(str(value)):
            problems.append(Problem(field, "secret://NAME or secret://projects/P/secrets/S[/versions/V]", repr(value)))
    for spec in pipeline.inputs.values():
        if spec.required and spec.name not in parameters and spec.name not in RESERVED_PARAMETERS:
            problems.append(Problem(f"parameters.{spec.name}", _EXPECTED.get(spec.type, spec.type), "nothing"))
    return problems


def run_parameters(
    pipeline: PipelineDefinition, parameters: Mapping[str, Any], *, run_key: str, results_uri: str, tenant: str = ""
) -> dict[str, Any]:
    """The parameters a run gets: the trigger's, plus the reserved ones the pipeline declares."""
    reserved = {"run_key": run_key, "results_uri": results_uri, "tenant": tenant}
    return {**parameters, **{name: reserved[name] for name in pipeline.declares_reserved}}


def _matches(kind: str, value: object) -> bool:
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "NUMBER_INTEGER":  # KFP integers are int64
        return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    if kind == "NUMBER_DOUBLE":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "LIST":
        return isinstance(value, list)
    if kind == "STRUCT":
        return isinstance(value, dict)
    return False


class Catalog:
    """Compiled pipelines under one URI, read through a BlobStore.

    A gs:// catalog is read once per instance: a deploy publishes it, and a new deploy makes new instances. A local
    folder (`make up`, the `relay` command) is one a developer edits and recompiles while the stack runs, so each
    lookup asks the file's size and version first (a stat, no read) and reads it again when either changed; the
    parsed pipeline is kept while the bytes are the same, so a mere touch costs one read, not a parse.

    A refusal names the catalog's location only with `show_location` (the `relay` command, whose user chose it):
    the functions' records are read by trigger authors, to whom Relay's own storage is none of their business.
    """

    def __init__(self, store: BlobStore, catalog_uri: str, *, show_location: bool = False) -> None:
        self._store = store
        self._uri = catalog_uri
        self._show_location = show_location
        self._local = not catalog_uri.startswith("gs://")  # the rule RoutingBlobStore sends to the disk by
        self._loaded: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, name: str, *, trigger_uri: str) -> PipelineDefinition:
        """The named pipeline; an InvalidTriggerError when the catalog has no such entry."""
        with self._lock:
            cached = self._loaded.get(name)
        if cached is not None and not self._local:
            return cached.pipeline
        uri = naming.catalog_entry(self._uri, name)
        # The policy sits beside the pipelines, and is not one.
        version = None if name == naming.POLICY_ENTRY else self._version(uri)
        if cached is not None and version is not None and cached.version == version:
            return cached.pipeline
        # Asked before the read: a change between the two is read now and seen as a change by the next lookup.
        package = None if version is None else self._read(uri)
        if package is None:
            problem = Problem("pipeline", "a pipeline in the catalog", f"{name!r}, which it does not hold")
            if self._show_location:
                problem = Problem("pipeline", f"a pipeline in the catalog {self._uri}", f"{name!r} (no {uri})")
            raise InvalidTriggerError(trigger_uri, [problem], code="unknown_pipeline")
        same = cached is not None and cached.pipeline.package == package
        pipeline = cached.pipeline if cached is not None and same else parse_pipeline_package(name, uri, package)
        with self._lock:
            if self._local:
                self._loaded[name] = _Entry(pipeline, version)
                return pipeline
            return self._loaded.setdefault(name, _Entry(pipeline, version)).pipeline

    def _version(self, uri: str) -> tuple[int, int] | None:
        """(size, generation) of a local entry, (0, 0) for a gs:// one (read once); None when there is none."""
        if not self._local:
            return (0, 0)
        try:
            info = self._store.stat(uri)
        except BlobNotFoundError:
            return None
        return (info.size, info.generation)

    def _read(self, uri: str) -> bytes | None:
        try:
            return self._store.read(uri).data
        except BlobNotFoundError:
            return None


@dataclass(frozen=True)
class _Entry:
    """A parsed pipeline, and the version of its file it was read at (local catalogs only)."""

    pipeline: PipelineDefinition
    version: tuple[int, int] | None
