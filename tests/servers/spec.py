"""Strict checks of a compiled KFP PipelineSpec and of the parameter values a run supplies for it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, struct_pb2  # type: ignore[import-untyped, unused-ignore]

if TYPE_CHECKING:
    from kfp.pipeline_spec import pipeline_spec_pb2


class SpecError(ValueError):
    """The spec or the parameters would be refused; the message says what was expected and found."""


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# JSON values travel as google.protobuf.Value, so an integer may arrive as 3.0 but never as 3.5 or "3".
_ACCEPTS: dict[str, Callable[[Any], bool]] = {
    "STRING": lambda v: isinstance(v, str),
    "NUMBER_INTEGER": lambda v: _is_number(v) and float(v).is_integer(),
    "NUMBER_DOUBLE": _is_number,
    "BOOLEAN": lambda v: isinstance(v, bool),
    "LIST": lambda v: isinstance(v, list),
    "STRUCT": lambda v: isinstance(v, dict),
}


def _pb2() -> Any:
    # Imported on first use: `import kfp.<anything>` runs kfp/__init__, which imports kfp.client and with
    # it google.auth.compute_engine -- freezing GCE_METADATA_HOST in this process (and costing ~0.35 s).
    from kfp.pipeline_spec import pipeline_spec_pb2

    return pipeline_spec_pb2


def parse_pipeline_spec(obj: Any, field: str = "pipeline_spec") -> pipeline_spec_pb2.PipelineSpec:
    """Parse like the backends do: unknown fields and wrong types are errors, not ignored."""
    if not isinstance(obj, dict):
        raise SpecError(f"{field} must be a JSON object, found {type(obj).__name__}")
    try:
        spec = json_format.ParseDict(obj, _pb2().PipelineSpec())
    except json_format.ParseError as exc:
        raise SpecError(f"{field} is not a valid PipelineSpec: {exc}") from exc
    if not spec.pipeline_info.name:
        raise SpecError(f"{field}.pipelineInfo.name is required")
    if not spec.schema_version:
        raise SpecError(f"{field}.schemaVersion is required")
    if not spec.root.HasField("dag"):
        raise SpecError(f"{field}.root.dag is required")
    return spec


def parse_kfp_pipeline_spec(obj: Any) -> pipeline_spec_pb2.PipelineSpec:
    """kfp.Client sends {pipeline_spec, platform_spec} instead of a bare spec when a platform spec exists."""
    if isinstance(obj, dict) and "pipeline_spec" in obj:
        extra = set(obj) - {"pipeline_spec", "platform_spec"}
        if extra:
            raise SpecError(f"pipeline_spec wrapper has unknown keys {sorted(extra)}")
        try:
            json_format.ParseDict(obj.get("platform_spec") or {}, _pb2().PlatformSpec())
        except json_format.ParseError as exc:
            raise SpecError(f"platform_spec is not a valid PlatformSpec: {exc}") from exc
        return parse_pipeline_spec(obj["pipeline_spec"], "pipeline_spec.pipeline_spec")
    return parse_pipeline_spec(obj)


def check_parameters(spec: pipeline_spec_pb2.PipelineSpec, values: Mapping[str, Any]) -> None:
    """Every value declared with the right type, every required input present."""
    if not isinstance(values, Mapping):
        raise SpecError(f"parameter values must be a JSON object, found {type(values).__name__}")
    declared = spec.root.input_definitions.parameters
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise SpecError(f"parameters {unknown} are not declared by the pipeline; declared: {sorted(declared)}")
    missing = sorted(
        name
        for name, p in declared.items()
        if name not in values and not p.is_optional and not p.HasField("default_value")
    )
    if missing:
        raise SpecError(f"required parameters {missing} have no value and no default")
    for name, value in values.items():
        p = declared[name]
        type_name = _pb2().ParameterType.ParameterTypeEnum.Name(p.parameter_type)
        accepts = _ACCEPTS.get(type_name)
        if accepts is not None and not accepts(value):
            raise SpecError(f"parameter {name!r} is {type_name}, found {type(value).__name__} {value!r}")
        if p.literals and json_format.ParseDict(value, struct_pb2.Value()) not in p.literals:
            raise SpecError(f"parameter {name!r} must be one of its literals, found {value!r}")
