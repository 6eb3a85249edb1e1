"""`make demo`'s scenario, run through the same code, with and without the Pub/Sub emulator; and `relay why` asked
of each of its samples, on the demo's own storage and logs, telling the right story."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from devstack.demo import CAPPED, PUSH_CAP, TRIGGER_TOPIC_PATH, Demo, Tracked, Why, run_demo
from relay import naming

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("emulators", [True, False], ids=["through-pubsub", "delivered-directly"])
def test_every_sample_ends_as_expected(tmp_path: Path, emulators: bool):
    out = io.StringIO()
    stories: dict[str, dict[str, Any]] = {}
    # Asked in one of the two runs only: the story is read from the same records and lines either way.
    inspect = (lambda why, demo: stories.update(ask_why(why, demo))) if emulators else None
    demo = run_demo(tmp_path, out=out, timeout=240, emulators=emulators, inspect=inspect)
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
        "the cancelled push, rerun": "succeeded",
        "data object no route takes": "skipped",
        "a plate of 3 files as one run": "succeeded",
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
    # The demo's printout ends with the first push's `relay why`: its launch, then its duplicate.
    assert re.search(r"What Relay decided about gs://relay-triggers/demo/push-assay\.json", printed)
    assert re.search(r"launched +run local-.*\n(.*\n)*.*duplicate \(log\) +event", printed), printed
    if emulators:
        check_stories(stories, demo, {label for label, _ in queued})


def ask_why(why: Why, demo: Demo) -> dict[str, dict[str, Any]]:
    """`relay why --json` of each sample, asked as a user would: its object's gs:// URI, else its run key."""
    stories = {}
    for item in demo.tracked:
        what = item.trigger_uri if item.sample.how in ("bucket", "again", "route", "unrouted") else item.run_key
        code, told = why(what, "--json")
        assert code == 0, f"relay why {what}: {told}"
        stories[item.sample.label] = json.loads(told)
    return stories


def steps(story: dict[str, Any], source: str = "record") -> list[str]:
    return [step["what"] for step in story["steps"] if step["source"] == source]


def step(story: dict[str, Any], what: str, source: str = "record") -> dict[str, str]:
    return next(s for s in story["steps"] if (s["what"], s["source"]) == (what, source))


def in_order(story: dict[str, Any], *wanted: tuple[str, str]) -> bool:
    """Whether the story holds these (what, source) steps in this order (others between them)."""
    told = iter((s["what"], s["source"]) for s in story["steps"])
    return all(any(seen == one for seen in told) for one in wanted)


LAUNCH = [("event", "record"), ("tenant", "record"), ("parameters", "record"), ("policy", "record")]
FROM_QUEUE = [("queued", "record"), ("claim", "record"), ("launched", "record")]


def check_stories(stories: dict[str, dict[str, Any]], demo: Demo, waited: set[str]) -> None:
    by_label: dict[str, Tracked] = {item.sample.label: item for item in demo.tracked}
    for label, item in by_label.items():
        story = stories[label]
        if item.run_key:
            assert story["run_keys"] == [item.run_key], label
        if item.state in ("succeeded", "cancelled"):
            # Every push and ratchet goes through its capped queue: verdict, place, then the launch from the queue.
            assert in_order(story, *LAUNCH, *FROM_QUEUE, (item.state, "record")), (label, story["steps"])
            assert steps(story).count("launched") == 1, label
            assert "waiting for room under tenants.lab.caps.pipelines." in step(story, "queued")["detail"], label
            assert step(story, "claim")["detail"].startswith("run key claimed from the queue by event "), label
            assert step(story, "policy")["detail"] == (
                f"allowed: pipeline {item.pipeline or item.sample.document['pipeline']} and each parameter within "
                "tenant lab's rules"
            )
    # Launched, then the same object delivered again: its one launch, then the duplicate the function answered.
    first, again = stories["push bucket to bucket"], stories["the first push, delivered again"]
    key = by_label["push bucket to bucket"].run_key
    assert first == again and in_order(again, ("launched", "record"), ("duplicate", "log")), again["steps"]
    assert f"already launched: {key}" in step(again, "duplicate", "log")["detail"]
    assert step(first, "tenant")["detail"].startswith("lab, by the tenant whose trigger prefix holds the object")
    # Rejected: no launch; the code and every problem, then the function's line.
    for label, code, problem in (
        ("malformed trigger", "invalid_parameters", "parameters.colour: expected a parameter of push"),
        ("push beyond the policy", "policy_denied", "parameters.destination.headers.Authorization: expected a secret"),
    ):
        story = stories[label]
        assert [(s["what"], s["source"]) for s in story["steps"]] == [
            ("event", "record"),
            ("tenant", "record"),
            ("rejected", "record"),
            ("rejected", "log"),
        ], story["steps"]
        verdict = step(story, "rejected")["detail"]
        assert verdict.startswith(f"{code}: ") and problem in verdict, verdict
    # Skipped: a data object no route takes has no record, and its function's line says why.
    skipped = stories["data object no route takes"]
    assert skipped["run_keys"] == [] and [(s["what"], s["source"]) for s in skipped["steps"]] == [("skipped", "log")]
    assert "a data object no route takes" in skipped["steps"][0]["detail"]
    # Queued: those the printout saw waiting; each story gives its place, then the launch from the queue.
    for label in waited:
        assert in_order(stories[label], *FROM_QUEUE), label
        assert re.match(r"place \S+: waiting for room", step(stories[label], "queued")["detail"]), label
    # Cancelled by a message, then rerun by another: who asked each, and the attempt it started.
    cancelled, rerun = by_label["push cancelled through the topic"], by_label["the cancelled push, rerun"]
    story = stories[cancelled.sample.label]
    assert in_order(story, ("launched", "record"), ("cancelled", "record"), ("rerun", "record")), story["steps"]
    asked = rf"message \d+ on {re.escape(TRIGGER_TOPIC_PATH)}"
    assert re.fullmatch(asked, step(story, "cancelled")["by"]) and re.fullmatch(asked, step(story, "rerun")["by"])
    assert rerun.run_key == naming.attempt_key(cancelled.run_key, 2)
    assert step(story, "rerun")["detail"] == f"attempt 2 as {rerun.run_key}, now succeeded"
    again_story = stories[rerun.sample.label]
    assert f"attempt 2 of {cancelled.run_key}" in step(again_story, "event")["detail"]
    assert step(again_story, "tenant")["detail"] == "lab, by the run it repeats"
    # Routed: the route took the object, and its templates made the parameters.
    routed = stories["data object a route takes"]
    assert step(routed, "route")["detail"] == "lab/incoming-json took the object"
    assert step(routed, "parameters")["detail"].startswith("the route's templates made: ")
    # The set: its route took the objects, the set closed with the three, then one launch with them.
    plate = stories["a plate of 3 files as one run"]
    assert in_order(plate, ("route", "record"), ("set", "record"), ("parameters", "record"), ("launched", "record"))
    assert step(plate, "route")["detail"] == "lab/plates took the set's objects"
    assert re.fullmatch(r"\S+ closed \(size\) with 3 object\(s\)", step(plate, "set")["detail"])
    made = step(plate, "parameters")["detail"]
    assert all(f"gs://lab-data/plates/plate-1/{name}" in made for name in ("a01.csv", "a02.csv", "a03.csv")), made
    assert step(plate, "tenant")["detail"] == "lab, by the tenant whose route collected the set"
