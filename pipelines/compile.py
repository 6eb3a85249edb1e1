"""Compile the catalog: `python -m pipelines.compile [--image IMAGE] [--policy FILE] [--policy-uri URI]
[--results-uri URI] [--out DIR]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfp import compiler

from pipelines import push_pipeline, ratchet_pipeline
from pipelines.components import DEFAULT_IMAGE, Deployment
from relay.policy import Resources, parse_policy

COMPILED = Path(__file__).parent / "compiled"
CATALOG: dict[str, Callable[[Deployment], Any]] = {"push": push_pipeline.build, "ratchet": ratchet_pipeline.build}


def compile_catalog(
    out: Path = COMPILED,
    image: str = DEFAULT_IMAGE,
    *,
    resources: Resources | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Path]:
    deployment = Deployment(image=image, resources=resources or Resources(), env=dict(env or {}))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CATALOG.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(build(deployment), str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"steps image the components run in ({DEFAULT_IMAGE})")
    parser.add_argument("--policy", type=Path, help="policy file whose `pipelines` section sets task resources")
    parser.add_argument("--policy-uri", default="", help="where the deployed steps read the policy (gs://...)")
    parser.add_argument("--results-uri", default="", help="where the deployed steps write records (gs://...)")
    parser.add_argument("--out", type=Path, default=COMPILED, help="folder for <name>.yaml (pipelines/compiled)")
    args = parser.parse_args(argv)
    resources = parse_policy(args.policy.read_bytes(), str(args.policy)).resources if args.policy else None
    env = {"RELAY_POLICY_URI": args.policy_uri, "RELAY_RESULTS_URI": args.results_uri}
    for path in compile_catalog(args.out, args.image, resources=resources, env={k: v for k, v in env.items() if v}):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
