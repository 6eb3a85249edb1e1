"""Compile the catalog: `python -m pipelines.compile [--image IMAGE] [--out DIR]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler

from pipelines import push_pipeline, ratchet_pipeline
from pipelines.components import DEFAULT_IMAGE

COMPILED = Path(__file__).parent / "compiled"
CATALOG: dict[str, Callable[[str], Any]] = {"push": push_pipeline.build, "ratchet": ratchet_pipeline.build}


def compile_catalog(out: Path = COMPILED, image: str = DEFAULT_IMAGE) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CATALOG.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(build(image), str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"steps image the components run in ({DEFAULT_IMAGE})")
    parser.add_argument("--out", type=Path, default=COMPILED, help="folder for <name>.yaml (pipelines/compiled)")
    args = parser.parse_args(argv)
    for path in compile_catalog(args.out, args.image):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
