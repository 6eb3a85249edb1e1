"""Compile the catalog: `python -m pipelines.compile [--image IMAGE] [--policy FILE] [--policy-uri URI]
[--results-uri URI] [--out DIR] [PIPELINE ...]`, where a PIPELINE of one's own is a module or `.py` file with a
`@dsl.pipeline` (`FILE.py:NAME` or `module:NAME` picks one) or a compiled spec (`.yaml`, `.yml`)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

from pipelines import push_pipeline, ratchet_pipeline
from pipelines.stamp import DEFAULT_IMAGE, Deployment, StampError, stamp_package
from relay import naming
from relay.catalog import parse_pipeline_package
from relay.policy import Resources, parse_policy

COMPILED = Path(__file__).parent / "compiled"
CATALOG: dict[str, Callable[[], Any]] = {"push": push_pipeline.build, "ratchet": ratchet_pipeline.build}
SPEC_SUFFIXES = (".yaml", ".yml")


class CompileError(ValueError):
    """A pipeline that cannot join the catalog, or a folder that would hold more than this compile writes."""


@dataclass(frozen=True)
class Entry:
    """One catalog entry before stamping: its name (the spec's pipelineInfo.name) and compiled YAML."""

    name: str
    package: str
    source: str  # where it came from, for messages


def compile_catalog(
    out: Path = COMPILED,
    image: str = DEFAULT_IMAGE,
    *,
    resources: Resources | None = None,
    env: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
) -> list[Path]:
    """Relay's pipelines and those `sources` name, stamped for the deployment, written to `out/<name>.yaml`.

    Nothing is written unless every entry compiles, and `out` may hold no other spec: the folder is the catalog
    a deployment publishes, exactly."""
    deployment = Deployment(image=image, resources=resources or Resources(), env=dict(env or {}))
    entries = [
        Entry(name, _compiled(build(), name), f"pipelines/{name}_pipeline.py") for name, build in CATALOG.items()
    ]
    for source in sources:
        entries.extend(load_source(source))
    _check_names(entries)
    stamped = {entry.name: stamp_package(entry.package, deployment, entry.source) for entry in entries}
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.suffix in SPEC_SUFFIXES and p.stem not in stamped)
        others = [name for name in others if name != f"{naming.POLICY_ENTRY}.yaml"]  # a deployment's policy
        if others:
            raise CompileError(f"{out}: expected a folder holding no other catalog entry, found {', '.join(others)} "
                               "(remove it, or compile into an empty folder)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, package in stamped.items():
        path = out / f"{name}.yaml"
        path.write_text(package)
        written.append(path)
    return written


def load_source(source: str) -> list[Entry]:
    """The pipelines `source` names: a compiled spec, or the @dsl.pipeline functions of a module or .py file."""
    if source.endswith(SPEC_SUFFIXES):
        try:
            package = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CompileError(f"{source}: expected a readable compiled spec, found {exc}") from None
        return [Entry(_spec_name(package, source), package, source)]
    module_name, _, attribute = source.partition(":")
    module = _import(module_name)
    packages = [_compiled(pipeline, source) for pipeline in _pipelines(module, attribute, source)]
    return [Entry(_spec_name(package, source), package, source) for package in packages]


def _import(name: str) -> Any:
    try:
        if name.endswith(".py") or Path(name).is_file():
            path = Path(name).resolve()
            spec = importlib.util.spec_from_file_location(f"relay_catalog_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python module: {path}")
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.parent))  # so it imports its neighbours, as `python FILE` would
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
            return module
        return importlib.import_module(name)
    except Exception as exc:  # the user's module: any failure of its import is theirs to see
        raise CompileError(
            f"{name}: expected a module with a @dsl.pipeline, found {type(exc).__name__}: {exc}"
        ) from None


def _pipelines(module: Any, attribute: str, source: str) -> list[Any]:
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, GraphComponent):
            raise CompileError(f"{source}: expected {attribute} to be a @dsl.pipeline, found {type(found).__name__}")
        return [found]
    pipelines: dict[int, Any] = {}
    for value in vars(module).values():
        if isinstance(value, GraphComponent):
            pipelines.setdefault(id(value), value)
    if not pipelines:
        raise CompileError(f"{source}: expected a @dsl.pipeline function, found none")
    return list(pipelines.values())


def _compiled(pipeline: Any, where: str) -> str:
    with tempfile.TemporaryDirectory(prefix="relay-compile-") as scratch:
        path = Path(scratch) / "pipeline.yaml"
        try:
            compiler.Compiler().compile(pipeline, str(path))
        except Exception as exc:  # kfp's own checks of the user's pipeline
            raise CompileError(f"{where}: kfp cannot compile it: {type(exc).__name__}: {exc}") from None
        return path.read_text()


def _spec_name(package: str, where: str) -> str:
    try:
        spec = parse_pipeline_package("", where, package.encode()).spec
    except Exception as exc:  # ValueError for no spec, yaml's errors for no YAML
        raise CompileError(f"{where}: expected a compiled KFP v2 pipeline spec, found {exc}") from None
    return str(spec.get("pipelineInfo", {}).get("name", ""))


def _check_names(entries: Sequence[Entry]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if not naming.PIPELINE_NAME.match(entry.name) or entry.name == naming.POLICY_ENTRY:
            raise CompileError(f"{entry.source}: expected {naming.PIPELINE_NAME_RULE} (not {naming.POLICY_ENTRY}) "
                               f"as its @dsl.pipeline name, found {entry.name!r}")  # fmt: skip
        if entry.name in seen:
            raise CompileError(f"{entry.source}: expected a pipeline name of its own, found {entry.name!r}, which "
                               f"{seen[entry.name]} has already")  # fmt: skip
        seen[entry.name] = entry.source


def deployment_env(policy_uri: str, results_uri: str) -> dict[str, str]:
    """The locations a deployed catalog names (left out when empty: the local runner provides its own)."""
    env = {"RELAY_POLICY_URI": policy_uri, "RELAY_RESULTS_URI": results_uri}
    return {name: value for name, value in env.items() if value}


def policy_resources(policy: Path | None) -> Resources | None:
    """The task ceilings of a policy file's `pipelines` section."""
    return parse_policy(policy.read_bytes(), str(policy)).resources if policy else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"steps image the components run in ({DEFAULT_IMAGE})")
    parser.add_argument("--policy", type=Path, help="policy file whose `pipelines` section sets task resources")
    parser.add_argument("--policy-uri", default="", help="where the deployed steps read the policy (gs://...)")
    parser.add_argument("--results-uri", default="", help="where the deployed steps write records (gs://...)")
    parser.add_argument("--out", type=Path, default=COMPILED, help="folder for <name>.yaml (pipelines/compiled)")
    parser.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="a module, .py file or spec of your own")
    args = parser.parse_args(argv)
    env = deployment_env(args.policy_uri, args.results_uri)
    try:
        written = compile_catalog(
            args.out, args.image, resources=policy_resources(args.policy), env=env, sources=args.pipelines
        )
    except (CompileError, StampError) as exc:
        print(f"pipelines.compile: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
