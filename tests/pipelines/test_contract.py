from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.steps.contract import StepContext, StepResult, StepSpec, main, parse_spec, run_step, spec_for
from pipelines.steps.errors import StepError
from relay.secrets import LocalSecrets


def test_spec_for_lists_every_secret_reference_by_where_it_sits():
    spec = spec_for(
        inputs={"sources": ["gs://a/"]},
        outputs={},
        parameters={"destination": {"kind": "http", "headers": {"Authorization": "secret://lims-token"}}},
    )
    assert spec.secrets == {"parameters.destination.headers.Authorization": "secret://lims-token"}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "expected a JSON object"),
        ({"input": {}}, "found input"),
        ({"parameters": []}, "spec.parameters: expected an object"),
        ({"secrets": {"key": "hunter2"}}, "expected a secret:// reference, found a value"),
    ],
)
def test_bad_specs_are_400s(document: object, fragment: str):
    with pytest.raises(StepError, match=fragment) as caught:
        parse_spec(document)
    assert caught.value.status == 400


def test_only_listed_references_resolve_and_values_never_leave_the_step():
    context = StepContext(resolver=LocalSecrets(env={"RELAY_SECRET_TOKEN": "s3cr3t-value"}))

    def leaky(spec: StepSpec, context: StepContext) -> StepResult:
        token = context.resolve(spec.parameters["token"], spec.secrets)
        raise RuntimeError(f"the server said no to {token}")

    spec = StepSpec(parameters={"token": "secret://token"}, secrets={"parameters.token": "secret://token"})
    result = run_step(leaky, spec, context)
    assert result.status == 500 and "s3cr3t-value" not in result.message and "[redacted]" in result.message
    unlisted = run_step(leaky, StepSpec(parameters={"token": "secret://token"}), context)
    assert unlisted.status == 400 and "not listed in spec.secrets: secret://token" in unlisted.message


def test_a_missing_secret_names_the_reference():
    context = StepContext(resolver=LocalSecrets(env={}))

    def needs(spec: StepSpec, context: StepContext) -> StepResult:
        context.resolve("secret://kaggle-key", spec.secrets)
        return StepResult("unreachable", 200)

    result = run_step(needs, StepSpec(secrets={"k": "secret://kaggle-key"}), context)
    assert (
        result.status == 424
        and "secret://kaggle-key: no such secret (looked in RELAY_SECRET_KAGGLE_KEY)" in result.message
    )


def test_the_cli_writes_the_result_and_exits_by_status(tmp_path: Path):
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps({"parameters": {"n": 2}}))

    def double(spec: StepSpec, context: StepContext) -> StepResult:
        return StepResult("doubled", 200, outputs={"n": spec.parameters["n"] * 2})

    assert main(double, [str(spec_path), str(result_path)]) == 0
    assert json.loads(result_path.read_text()) == {
        "message": "doubled",
        "outputs": {"n": 4},
        "metrics": {},
        "status": 200,
    }
    spec_path.write_text("{")
    assert main(double, [str(spec_path), str(result_path)]) == 1
    assert json.loads(result_path.read_text())["status"] == 400


def test_a_url_kept_as_a_secret_is_redacted_even_in_part():
    webhook = "https://hooks.example.com/services/T0CANARY/B0CANARY/s3cr3tWebhookToken?sig=abcdef123456"
    context = StepContext(resolver=LocalSecrets(env={"RELAY_SECRET_HOOK": webhook}))

    def echo(spec: StepSpec, context: StepContext) -> StepResult:
        url = context.resolve("secret://hook", spec.secrets)
        delivered = url.split("?")[0] + "/a.json"
        return StepResult(f"posted to {delivered}", 200, outputs={"receipts": [{"destination": delivered}]})

    result = run_step(echo, StepSpec(secrets={"h": "secret://hook"}), context)
    assert "s3cr3tWebhookToken" not in result.message and "s3cr3tWebhookToken" not in json.dumps(result.outputs)


def test_redaction_keeps_numbers_and_structure():
    context = StepContext(resolver=LocalSecrets(env={"RELAY_SECRET_PIN": "42"}))

    def counts(spec: StepSpec, context: StepContext) -> StepResult:
        context.resolve("secret://pin", spec.secrets)
        return StepResult("done", 200, outputs={"bytes": 4242, "note": "pin 42"})

    result = run_step(counts, StepSpec(secrets={"p": "secret://pin"}), context)
    assert result.outputs == {"bytes": 4242, "note": "pin [redacted]"}
