"""A pipeline of your own for Relay's catalog: README, "Add your own pipeline".

Compile it with `kfp dsl compile --py examples/hello/hello.py --function hello --output CATALOG/hello.yaml`.
Relay checks a trigger's parameters against the inputs compiled here: `greeting` is required (no default),
`times` is an integer that defaults to 2. Declaring `run_key` (or `results_uri`, `tenant`) would have Relay fill it.
"""

from kfp import dsl


@dsl.component(base_image="python:3.11-slim")
def greet(greeting: str, times: int) -> str:
    text = " ".join([greeting] * times)
    print(text)
    return text


@dsl.pipeline(name="hello", description="Says a greeting a few times.")
def hello(greeting: str, times: int = 2) -> None:
    greet(greeting=greeting, times=times)
