"""A pipeline of your own for Relay's catalog: docs/own-pipeline.md.

Compile it into a catalog with Relay's own: `relay compile examples/hello/hello.py --out build/catalog`.
Relay checks a trigger's parameters against the inputs compiled here: `greeting` is required (no default),
`times` is an integer that defaults to 2. `run_key`, `results_uri` and `tenant` are Relay's: it fills them, and
the step hands them to `relay_step`, which checks the run's launch and records its result in Relay's shape.
"""

from kfp import dsl


# The steps image: it has the relay_step helper, and `relay compile --image` puts the deployment's image here.
@dsl.component(base_image="relay/steps:latest", install_kfp_package=False)
def greet(greeting: str, times: int, run_key: str, results_uri: str, tenant: str, run_id: str) -> str:
    from pipelines.steps.own import relay_step

    parameters = {"greeting": greeting, "times": times, "run_key": run_key, "results_uri": results_uri}
    with relay_step("hello", {**parameters, "tenant": tenant}, run_id=run_id, defaults={"times": 2}) as step:
        text = " ".join([greeting] * times)
        print(text)
        step.result(f"said {greeting!r} {times} times", outputs={"text": text}, metrics={"words": len(text.split())})
    return text


@dsl.pipeline(name="hello", description="Says a greeting a few times.")
def hello(greeting: str, times: int = 2, run_key: str = "", results_uri: str = "", tenant: str = "") -> None:
    greet(
        greeting=greeting,
        times=times,
        run_key=run_key,
        results_uri=results_uri,
        tenant=tenant,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
