"""Careless services hand a token back, and nothing Relay writes may carry it: tried with the real step commands.

A LIMS and an inference server the policy allows echo the token they were sent (without its `Bearer ` prefix, and
percent-encoded, base64-encoded or JSON-escaped) where clients look: a 401's reason phrase, a redirect's
Location, the Location of what was made, the id in a JSON answer, an algorithm's output. The push and ratchet steps
run as on a backend (`python -m pipelines.steps.<step> spec.json result.json`, for a run the functions launched, the
policy from the deployment's environment, the secret bound by it); then result.json, the step's stdout and stderr,
and the ratchet's baseline, history and reports are searched for the token in any of its forms, whole or in part.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from pipelines.steps.contract import spec_for
from relay.triggers import RESERVED_PARAMETERS
from tests.launches import launch
from tests.servers.base import LoopbackServer, Request, Response
from tests.servers.lims import LimsServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# A token68 with the characters encodings change: "/" and "+" (percent, JSON), "=" (percent, some JSON encoders).
TOKEN = "lims/7f3a+9c2e.51d84b6a="


def encoded(token: str, how: str) -> str:
    """The token as a careless server writes it back."""
    if how == "bare":
        return token
    if how == "percent":
        return quote(token, safe="")
    if how == "base64":
        return base64.b64encode(token.encode()).decode()
    if how == "json":  # "/" as PHP's json_encode writes it, "=" as Gson's HTML-safe escaping does
        return token.replace("/", "\\/").replace("=", "\\u003d")
    raise ValueError(how)


ENCODINGS = ("bare", "percent", "base64", "json")


def leaks(text: str, token: str = TOKEN) -> list[str]:
    """The forms of `token` (or ten characters of its start or end) found in `text`, however it was encoded."""
    unescaped = text
    for _ in range(3):  # JSON inside JSON inside JSON
        unescaped = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unescaped)
        unescaped = re.sub(r"\\+([/\"'\\])", r"\1", unescaped)
    candidates = {text, unescaped, unquote(text), unquote(unquote(text)), html.unescape(text)}
    candidates |= {unquote(unescaped), html.unescape(unescaped)}
    b64 = base64.b64encode(token.encode()).decode().rstrip("=")[:-1]
    needles = {token, token[:10], token[-10:], b64, b64.translate(str.maketrans("+/", "-_")), b64[:12], b64[-12:]}
    return sorted({needle for candidate in candidates for needle in needles if needle in candidate})


def run_step(
    step: str, tmp_path: Path, parameters: dict[str, Any], policy: str, secrets: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """The step command as a backend runs it, for the run the functions launched with `parameters` (the tenant's
    own, under the deployment's results location); its result and everything it printed."""
    results, tenant, inputs = str(tmp_path / "results"), parameters["tenant"], parameters.pop("inputs", {})
    run_key = f"{tenant}--{step}"
    given = {name: value for name, value in parameters.items() if name not in RESERVED_PARAMETERS}
    launch(results, step, {**inputs, **given}, run_key=run_key, tenant=tenant)
    spec = spec_for(inputs=inputs, outputs={}, parameters={**parameters, "run_key": run_key})
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    (tmp_path / "policy.yaml").write_text(policy)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'functions'}{os.pathsep}{REPO}",
        "RELAY_POLICY_URI": str(tmp_path / "policy.yaml"),
        "RELAY_BACKEND": "local",
        "RELAY_RESULTS_URI": results,  # as compiled into the catalog
        "RELAY_SECRET_LIMS_TOKEN": f"Bearer {TOKEN}",
        "RELAY_SECRET_MODEL_TOKEN": TOKEN,
        **(secrets or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", f"pipelines.steps.{step}", str(tmp_path / "spec.json"), str(tmp_path / "result.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return json.loads((tmp_path / "result.json").read_text()), done.stdout + done.stderr


# --- the push step and a careless LIMS ---------------------------------------------------------------------


class CarelessLims(LimsServer):
    """Takes the right token, then hands it back (`how` encoded) in one place (`where`):

    `reason`: a 401 whose reason phrase quotes it; `redirect`: a 307 to a Location holding it; `created`: a 201
    whose Location holds it; `id`: a 201 whose JSON id holds it.
    """

    def __init__(self, where: str, how: str) -> None:
        super().__init__(authorization=f"Bearer {TOKEN}")
        self.where, self.echo = where, encoded(TOKEN, how)

    def handle(self, request: Request) -> Response:
        if self.where == "reason":
            return Response(401, json.dumps({"error": f"denied {self.echo}"}).encode(), reason=f"Denied {self.echo}")
        if self.where == "redirect":
            target = f"{self.url}/login/{self.echo}/continue?token={quote(self.echo)}"
            return Response(307, b"", {"Location": target})
        answer = super().handle(request)
        if self.where == "created" and answer.status == 201:
            return Response(201, b"", {"Location": f"/files/{self.echo}/{request.path.rsplit('/', 1)[-1]}"})
        if self.where == "id" and answer.status == 201:
            return Response.json(201, {"id": f"rec-{self.echo}"})
        return answer


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "plate-1.json").write_text(json.dumps({"od600": [0.1, 0.2]}))
    return folder


def lims_policy(lims: LimsServer, lab: Path) -> str:
    return textwrap.dedent(f"""\
        version: 1
        tenants:
          - name: lab
            sources: ["{lab.as_uri()}/"]
            destinations:
              - {{id: lims, kind: http, url: "{lims.url}/"}}
            secrets:
              - {{secret: "secret://lims-token", to: lims, field: headers.Authorization}}
        """)


@pytest.mark.parametrize("how", ENCODINGS)
@pytest.mark.parametrize("where", ["reason", "redirect", "created", "id"])
def test_a_token_the_lims_hands_back_reaches_no_record(tmp_path: Path, lab: Path, where: str, how: str):
    with CarelessLims(where, how) as lims:
        put = where == "created"
        destination = {
            "kind": "http",
            "url": f"{lims.url}/files/{{name}}" if put else f"{lims.url}/samples/upload",
            "method": "PUT" if put else "POST",
            "headers": {"Authorization": "secret://lims-token"},
        }
        parameters = {"inputs": {"sources": [f"{lab.as_uri()}/"]}, "destination": destination, "tenant": "lab"}
        result, printed = run_step("push", tmp_path, parameters, lims_policy(lims, lab))
        sent, origin = [r.header("Authorization") for r in lims.requests], lims.url
    assert sent == [f"Bearer {TOKEN}"]  # the policy bound it, the step sent it: the LIMS had it to echo
    expected = {"reason": 401, "redirect": 400, "created": 200, "id": 200}[where]
    assert result["status"] == expected, result["message"]
    assert leaks(json.dumps(result)) == [], result
    assert leaks(printed) == [], printed
    if where == "reason":  # the status line is the standard one, never the server's phrase
        assert "answered HTTP 401 Unauthorized;" in result["message"] and "Denied" not in result["message"]
    if where == "redirect":  # where it pointed is named by its origin only
        assert f"answered HTTP 307 Temporary Redirect to {origin};" in result["message"]
    if where in ("created", "id"):  # the receipt keeps the server's version, scrubbed
        [receipt] = result["outputs"]["receipts"]
        assert "[redacted]" in receipt["version"]


# --- the push step and a careless Kaggle: the key travels inside the base64 of `user:key` ---------------------

KAGGLE_KEY = "kgl-7f3a9c0e5b1d-canary"


class CarelessKaggle(LoopbackServer):
    """Refuses every call with a 401 whose reason phrase is the Basic credentials it was sent, still encoded."""

    def handle(self, request: Request) -> Response:
        sent = (request.header("Authorization") or "").partition(" ")[2]
        return Response(401, b"{}", {"Content-Type": "application/json"}, reason=sent)


def test_a_kaggle_key_handed_back_inside_basic_credentials_reaches_no_record(tmp_path: Path, lab: Path):
    with CarelessKaggle() as kaggle:
        policy = textwrap.dedent(f"""\
            version: 1
            tenants:
              - name: lab
                sources: ["{lab.as_uri()}/"]
                destinations: [{{id: kaggle-lab, kind: kaggle, owner: lab, endpoint: "{kaggle.url}"}}]
                secrets: [{{secret: "secret://kaggle-key", to: kaggle-lab, field: key}}]
            """)
        destination = {
            "kind": "kaggle",
            "dataset": "lab/plate-reader-od600",
            "title": "Plate reader OD600",
            "licence": "CC0-1.0",
            "username": "lab",
            "key": "secret://kaggle-key",
            "endpoint": kaggle.url,
        }
        parameters = {"inputs": {"sources": [f"{lab.as_uri()}/"]}, "destination": destination, "tenant": "lab"}
        result, printed = run_step("push", tmp_path, parameters, policy, {"RELAY_SECRET_KAGGLE_KEY": KAGGLE_KEY})
        sent = {r.header("Authorization") for r in kaggle.requests}
    basic = base64.b64encode(f"lab:{KAGGLE_KEY}".encode()).decode()
    assert sent == {f"Basic {basic}"}  # the key reached the server, which had it to echo
    assert result["status"] == 401 and "HTTP 401 Unauthorized" in result["message"], result["message"]
    for text in (json.dumps(result), printed):
        assert basic not in text and basic[6:30] not in text and leaks(text, KAGGLE_KEY) == [], text


# --- the ratchet step and a careless inference server ------------------------------------------------------


class CarelessModel(LoopbackServer):
    """An Open Inference Protocol server that echoes the bearer token (`how` encoded) in the validation call's
    output, as JSON text inside the output tensor, and refuses each benchmark call with a 401 whose reason phrase
    quotes it."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.echo = encoded(TOKEN, how)

    def handle(self, request: Request) -> Response:
        text = request.json["inputs"][0]["data"][0] if isinstance(request.json, dict) else ""
        if "validate" not in text:
            return Response(401, b"{}", {"Content-Type": "application/json"}, reason=f"Denied {self.echo}")
        seen = '{"authorization": "Bearer ' + self.echo + '"}'  # JSON text the server wrote itself
        output = {"name": "output", "shape": [1], "datatype": "BYTES", "data": [seen]}
        return Response.json(200, {"model_name": "count", "outputs": [output]})


@pytest.mark.parametrize("how", ENCODINGS)
def test_a_token_the_inference_server_hands_back_reaches_no_report(tmp_path: Path, how: str):
    workflow = {
        "name": "remote",
        "run_only": True,
        "test_info": {"entrypoint": "count", "tests": [{"name": "t", "payload": {"text": "bench"}, "timeout": 5}]},
        "algorithms": [{"name": "count", "language": "python3", "test_payload": {"text": "validate"}}],
    }
    with CarelessModel(how) as model:
        policy = textwrap.dedent(f"""\
            version: 1
            tenants:
              - name: lab
                clusters: [{{id: model, kind: http, url: "{model.url}/"}}]
                secrets: [{{secret: "secret://model-token", to: model, field: token}}]
            """)
        destination = {"kind": "http", "preset": "oip", "url": model.url, "token": "secret://model-token"}
        parameters = {
            "workflow": workflow,
            "destination": destination,
            "tenant": "lab",
            "results_uri": str(tmp_path / "results"),
        }
        result, printed = run_step("ratchet", tmp_path, parameters, policy)
        sent = {r.header("Authorization") for r in model.requests}
    assert sent == {f"Bearer {TOKEN}"}
    assert result["status"] == 502, result["message"]
    assert "HTTP 401 Unauthorized" in result["message"] and "Denied" not in result["message"]
    assert leaks(json.dumps(result)) == [], result
    assert leaks(printed) == [], printed
    written = sorted(path for path in (tmp_path / "results").rglob("*") if path.is_file())
    assert {path.name for path in written} >= {"baseline.json", "history.jsonl", "report.json", "report.html"}
    for path in written:
        assert leaks(path.read_text()) == [], path
    report = json.loads(next(p for p in written if p.name == "report.json").read_text())
    assert "[redacted]" in report["algorithms"][0]["output"]  # the output is kept, scrubbed before it was cut


# --- log lines -----------------------------------------------------------------------------------------------

LOGGING_STEP = """
    import logging, sys
    from urllib.parse import quote
    from pipelines.steps.contract import StepResult, main

    def step(spec, context):
        token = context.resolve(spec.parameters["token"], spec.secrets).removeprefix("Bearer ")
        # What a client library logs when a server hands the token back: a warning, and an error with its cause.
        logging.getLogger("huggingface_hub").warning("redirected to /login?t=%s", quote(token, safe=""))
        try:
            raise ConnectionError(f"refused: {token}")
        except ConnectionError:
            logging.getLogger("kagglesdk").exception("call failed for %r", token.encode())
        return StepResult("done", 200)

    raise SystemExit(main(step, sys.argv[1:]))
"""


def test_log_lines_a_step_makes_are_scrubbed_whichever_handler_writes_them(tmp_path: Path):
    spec = spec_for(inputs={}, outputs={}, parameters={"token": "secret://lims-token"})
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'functions'}{os.pathsep}{REPO}",
        "RELAY_SECRET_LIMS_TOKEN": f"Bearer {TOKEN}",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOGGING_STEP), str(tmp_path / "spec.json"), str(tmp_path / "r.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # logging's last resort wrote them to stderr: the lines are there, the token in none of its forms
    assert "redirected to /login?t=[redacted]" in done.stderr and "Traceback" in done.stderr
    assert leaks(done.stdout + done.stderr) == [], done.stderr
