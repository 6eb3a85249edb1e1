"""`make demo`'s scenario, run through the same code, with and without the Pub/Sub emulator."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from devstack.demo import CAPPED, PUSH_CAP, run_demo

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("emulators", [True, False], ids=["through-pubsub", "delivered-directly"])
def test_every_sample_ends_as_expected(tmp_path: Path, emulators: bool):
    out = io.StringIO()
    demo = run_demo(tmp_path, out=out, timeout=120, emulators=emulators)
    printed = out.getvalue()
    assert demo.ok, printed
    states = {item.sample.label: item.state for item in demo.tracked}
    assert states == {
        "push bucket to bucket": "succeeded",
        "ratchet, first run (sets the bar)": "succeeded",
        "ratchet, second run (tightens it)": "succeeded",
        "push published to the topic": "succeeded",
        "the first push, delivered again": "duplicate",
        "malformed trigger": "rejected",
        "push beyond the policy": "rejected",
        "data object a route takes": "succeeded",
        "push cancelled through the topic": "cancelled",
        **{f"push {n} past the cap of {PUSH_CAP}": "succeeded" for n in range(1, CAPPED + 1)},
    }
    codes = {item.sample.label: item.code for item in demo.tracked if item.state == "rejected"}
    assert codes == {"malformed trigger": "invalid_parameters", "push beyond the policy": "policy_denied"}
    pushes = [item for item in demo.tracked if item.sample.label.startswith(("push bucket", "the first push"))]
    assert pushes[0].run_key == pushes[1].run_key  # the redelivery is the same trigger, not a new run
    assert "bar set for" in next(i.note for i in demo.tracked if i.sample.label.startswith("ratchet, first"))
    assert demo.report is not None and "<svg" in demo.report.read_text()
    assert "parameters.colour: expected a parameter of push" in printed
    assert "parameters.destination.headers.Authorization: expected a secret only where tenants.lab.secrets" in printed
    assert "The policy the triggers were held to: " in printed
    assert ("delivered straight to the functions" in printed) is not emulators
    assert "every sample ended as expected" in printed
    routed = next(item for item in demo.tracked if item.sample.how == "route")
    assert routed.trigger_uri == "gs://lab-data/incoming/reading-1.json" and routed.run.launch is not None
    assert routed.run.launch["trigger"]["route"] == "lab/incoming-json" and routed.pipeline == "push"
    assert routed.run.launch["parameters"]["sources"] == [routed.trigger_uri]
    cancelled = next(item for item in demo.tracked if item.sample.how == "cancel")
    assert cancelled.cancel_sent and cancelled.note.startswith("cancelled by message ")
    # More pushes than the demo policy's cap at once: some wait in lab's queue, then launch as others end.
    queued = re.findall(r"^  (.+): queued, place (\d+) in lab's queue", printed, re.M)
    left = re.findall(
        r"^  (.+): (?:launching|launched|running|succeeded|cancelled) after [\d.]+ s in the queue", printed, re.M
    )
    assert queued and {label for label, _ in queued} == set(left), printed
    assert all(states[label] in ("succeeded", "cancelled") for label in left)
