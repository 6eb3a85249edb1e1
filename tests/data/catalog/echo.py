"""A small pipeline that takes one parameter of every KFP type, for the launch path's tests."""

# No `from __future__ import annotations`: KFP reads the real annotation objects at decoration time.
from kfp import compiler, dsl


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def describe(
    message: str, count: int, ratio: float, enabled: bool, items: list, options: dict, fail: bool, run_key: str
) -> str:
    if fail:
        raise RuntimeError(f"asked to fail: {message}")
    return f"{run_key}: {message} x{count} ratio={ratio} enabled={enabled} items={items} options={options}"


@dsl.pipeline(name="echo")
def echo(
    message: str,
    count: int = 1,
    ratio: float = 0.5,
    enabled: bool = True,
    items: list = [],  # noqa: B006 - KFP takes pipeline defaults as literals
    options: dict = {},  # noqa: B006
    fail: bool = False,
    run_key: str = "",
    results_uri: str = "",
) -> str:
    return describe(
        message=message,
        count=count,
        ratio=ratio,
        enabled=enabled,
        items=items,
        options=options,
        fail=fail,
        run_key=run_key,
    ).output


if __name__ == "__main__":
    compiler.Compiler().compile(echo, __file__.replace(".py", ".yaml"))
