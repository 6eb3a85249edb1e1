"""`relay status --wait`, `relay runs` filters, `relay report`, `relay validate --object`, and one exit status for
an invalid document whichever command meets it."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from relay import naming
from relay.adapters.routing import RoutingBlobStore
from relay.service import Relay
from relay.status import RunRecords
from relaycli.wait import EXIT_TIMEOUT, follow
from tests.cli.support import ECHO, Ran, drop, finish, relay_on
from tests.fakes import MemoryBlobStore

Cli = Callable[..., Ran]
FAST = ("--interval", "0.02")


def test_wait_exits_0_for_a_run_that_succeeded_and_1_for_one_that_failed(cli: Cli, relay: Relay):
    good = drop(relay, ECHO, "good.json")
    bad = drop(relay, ECHO, "bad.json")
    finish(relay, good.run_key or "", outputs={})
    finish(relay, bad.run_key or "", outputs={}, status=500, message="boom")
    succeeded = cli("status", good.run_key, "--wait", *FAST)
    assert succeeded.code == 0 and "succeeded" in succeeded.out
    assert succeeded.err == f"{good.run_key}: succeeded (0 s)\n"  # the progress line, on stderr
    failed = cli("status", bad.run_key, "--wait", "--json", *FAST)
    assert failed.code == 1 and failed.json()["state"] == "failed"


def test_wait_exits_1_for_a_rejected_trigger(cli: Cli, relay: Relay):
    rejected = drop(relay, {"pipeline": "echo"}, "rejected.json")
    assert cli("status", rejected.run_key, "--wait", *FAST).code == 1


def test_wait_follows_a_run_until_it_ends(cli: Cli, relay: Relay):
    launched = drop(relay, ECHO, "slow.json")
    key = launched.run_key or ""
    timer = threading.Timer(0.3, lambda: finish(relay, key, outputs={}))
    timer.start()
    try:
        ran = cli("status", key, "--wait", "--timeout", "20", *FAST)
    finally:
        timer.join()
    assert ran.code == 0, ran.err
    assert ran.err.splitlines()[-1].startswith(f"{key}: succeeded (")


def test_the_progress_line_changes_with_the_state_and_a_terminal_gets_it_in_place():
    states = iter(["launching", "launched", "launched", "succeeded"])
    now = iter(range(100))

    def find() -> RunRecords:
        return RunRecords("k", {}, launch={"state": next(states)})

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    run, timed_out = follow(find, "k", None, 1.0, log, clock=lambda: float(next(now)), sleep=lambda _: None)
    assert (run.state if run else None, timed_out) == ("succeeded", False)
    assert log.getvalue() == "k: launching (1 s)\nk: launched (2 s)\nk: succeeded (4 s)\n"
    states = iter(["launched"] * 5)
    terminal = Terminal()
    run, timed_out = follow(find, "k", 2.0, 1.0, terminal, clock=lambda: float(next(now)), sleep=lambda _: None)
    assert timed_out and terminal.getvalue().count("\r\x1b[K") >= 2 and terminal.getvalue().endswith("\n")


def test_wait_has_its_own_exit_status_on_timeout(cli: Cli, relay: Relay):
    launched = drop(relay, ECHO, "stuck.json")
    ran = cli("status", launched.run_key, "--wait", "--timeout", "0.1", *FAST)
    assert ran.code == EXIT_TIMEOUT == 3 and "launched" in ran.out
    nothing = cli("status", "push-0123456789abcdef0123", "--wait", "--timeout", "0.1", *FAST)
    assert nothing.code == 3 and "found none" in nothing.err
    assert cli("status", launched.run_key, "--wait", "--timeout", "-1").code == 2


def test_runs_filters_by_state_pipeline_and_time(cli: Cli, blobs: RoutingBlobStore, results: str, relay: Relay):
    old = drop(relay_on(blobs, results, datetime(2026, 1, 1, tzinfo=UTC)), ECHO, "old.json")
    new = drop(relay, ECHO, "new.json")
    rejected = drop(relay, {"pipeline": "echo"}, "rejected.json")

    def keys(*argv: str) -> list[str]:
        ran = cli("runs", "--json", *argv)
        assert ran.code == 0, ran.err
        return [run["run_key"] for run in ran.json()]

    assert keys("--state", "rejected") == [rejected.run_key]
    assert set(keys("--state", "launched")) == {old.run_key, new.run_key}
    assert keys("--state", "launched", "--since", "1h") == [new.run_key]
    assert set(keys("--since", "2026-06-01T00:00:00Z")) == {new.run_key, rejected.run_key}
    assert set(keys("--pipeline", "echo")) == {old.run_key, new.run_key, rejected.run_key}
    assert keys("--pipeline", "push") == []
    assert len(keys("--pipeline", "echo", "--limit", "1")) == 1
    assert cli("runs", "--since", "yesterday").code == 2
    assert cli("runs", "--state", "nope").code == 2


def test_report_copies_the_ratchets_report_to_a_file(cli: Cli, relay: Relay, results: str, tmp_path: Path):
    launched = drop(relay, ECHO, "bench.json")
    key = launched.run_key or ""
    report = Path(results) / "ratchet" / "lab" / "wf" / "local" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>bar</html>")
    finish(relay, key, outputs={"report_html": str(report)})
    target = tmp_path / "out.html"
    ran = cli("report", key, "--output", str(target), "--json")
    assert ran.code == 0, ran.err
    assert target.read_text() == "<html>bar</html>" and ran.json()["bytes"] == len("<html>bar</html>")


def test_report_refuses_what_is_missing_or_outside_the_records(cli: Cli, relay: Relay, tmp_path: Path):
    running = drop(relay, ECHO, "running.json")
    assert "found none yet (state launched)" in cli("report", running.run_key).err
    plain = drop(relay, ECHO, "plain.json")
    finish(relay, plain.run_key or "", outputs={})
    assert "expected outputs.report_html" in cli("report", plain.run_key).err
    elsewhere = drop(relay, ECHO, "elsewhere.json")
    outside = tmp_path / "secret.html"
    outside.write_text("not a report")
    finish(relay, elsewhere.run_key or "", outputs={"report_html": str(outside)})
    ran = cli("report", elsewhere.run_key, "--output", str(tmp_path / "x.html"))
    assert ran.code == 1 and "expected its report under" in ran.err and not (tmp_path / "x.html").exists()
    assert cli("report", "Not A Key").code == 2


def test_one_exit_status_for_an_invalid_document_whichever_command(cli: Cli, tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"pipeline": "echo", "parameters": {"count": "x"}}))
    validated = cli("validate", str(path))
    uploaded = cli("trigger", str(path), "--bucket", "triggers")
    published = cli("publish", str(path), "--topic", "projects/proj-lab/topics/relay-triggers")
    assert (validated.code, uploaded.code, published.code) == (1, 1, 1)
    # Usage errors keep 2: that is a command that cannot work, not a document that does not.
    assert cli("trigger", str(path)).code == 2


ROUTED = """
notifications:
  - {topic: projects/proj-lab/topics/lab-triggers, buckets: [lab-data]}
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    topics: [projects/proj-lab/topics/lab-triggers]
    routes:
      - id: assay-csv
        bucket: lab-data
        prefix: assay/
        glob: "*.csv"
        pipeline: echo
        parameters: {message: "{name} of {content_type}", count: "{size}", options: {batch: "{metadata.batch}"}}
"""


def test_validate_says_what_a_data_object_would_start(cli: Cli, gcs: MemoryBlobStore, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(ROUTED)
    # The object's facts are storage's (issue 20): its content type and metadata come with its upload.
    data = b"a,b\n1,2\n"
    generation = gcs.put("gs://lab-data/assay/x.csv", data, content_type="text/csv", metadata={"batch": "b1"})
    argv = ("validate", "--object", "gs://lab-data/assay/x.csv", "--policy", str(policy))
    ran = cli(*argv, "--json")
    assert ran.code == 0, ran.out + ran.err
    shown = ran.json()
    assert (shown["route"], shown["pipeline"], shown["valid"]) == ("lab/assay-csv", "echo", True)
    assert shown["parameters"] == {"message": "assay/x.csv of text/csv", "count": 8, "options": {"batch": "b1"}}
    identity = naming.object_identity("lab-data", "assay/x.csv", generation)
    assert shown["run_key"] == naming.derive_run_key("echo", identity)
    # Without the metadata the template needs, it says what Relay's rejection would.
    gcs.put("gs://lab-data/assay/y.csv", data, content_type="text/csv")
    lacking = cli("validate", "--object", "gs://lab-data/assay/y.csv", "--policy", str(policy))
    assert lacking.code == 1 and "would be rejected (invalid_parameters)" in lacking.out
    assert "parameters.options.batch: expected the object's metadata.batch" in lacking.out
    outside = cli("validate", "--object", "gs://lab-data/other/x.csv", "--policy", str(policy))
    assert outside.code == 1 and outside.out.startswith("no route: gs://lab-data/other/x.csv would start nothing")
    assert cli("validate", "t.json", "--object", "gs://lab-data/assay/x.csv").code == 2
    assert cli("validate", "--object", "lab-data/x.csv").code == 2
