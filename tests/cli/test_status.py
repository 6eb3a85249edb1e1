from __future__ import annotations

import re
from collections.abc import Callable

from relay import naming
from relay.service import Relay
from relay.status import run_key_for_object
from tests.cli.support import ECHO, Ran, drop, fields, finish


def test_a_launched_run_by_its_key(cli: Callable[..., Ran], relay: Relay, results: str):
    outcome = drop(relay, ECHO, "t.json")
    assert outcome.run_key is not None
    ran = cli("status", outcome.run_key)
    assert ran.code == 0 and ran.err == ""
    rows = {label: values[0] for label, values in fields(ran.out).items()}
    records = ran.out.split("\n\n")[1]
    assert rows["run key"] == outcome.run_key
    assert rows["pipeline"] == "echo" and rows["state"] == "launched" and rows["status"] == "202"
    assert rows["run id"] == "run-1" and rows["run url"] == "https://pipelines.example/runs/1"
    generation = relay.store.stat("gs://triggers/t.json").generation
    assert rows["trigger"] == f"gs://triggers/t.json#{generation} (via storage-event)"
    assert rows["claimed"].endswith("Z") and rows["launched"].endswith("Z")
    assert "lease until" not in rows and "job id" not in rows  # only while launching; only with a result
    assert rows["message"] == "run run-1 created on fake"
    header, launch = records.splitlines()
    assert header.split() == ["RECORD", "STATE", "STATUS", "WRITTEN", "URI"]
    assert launch.split() == [
        "launch",
        "launched",
        "202",
        rows["launched"],
        naming.launch_record(results, outcome.run_key),
    ]


def test_a_trigger_uri_is_followed_to_its_run_key(cli: Callable[..., Ran], relay: Relay):
    first = drop(relay, ECHO, "t.json")
    first_generation = relay.store.stat("gs://triggers/t.json").generation
    second = drop(relay, ECHO, "t.json")  # re-uploaded: a new generation, a new run
    assert first.run_key != second.run_key
    current = cli("status", "gs://triggers/t.json", "--json")
    assert current.code == 0 and current.json()["run_key"] == second.run_key
    assert second.run_key == run_key_for_object(relay.store, "gs://triggers/t.json")
    generation = relay.store.stat("gs://triggers/t.json").generation
    pinned = cli("status", f"gs://triggers/t.json#{generation}", "--json")
    assert pinned.json()["run_key"] == second.run_key
    # Without object versioning the replaced generation is gone, and with it the way to its run key.
    earlier = cli("status", f"gs://triggers/t.json#{first_generation}")
    assert earlier.code == 1
    assert earlier.err == (
        f"relay status: gs://triggers/t.json#{first_generation}: expected a trigger file, "
        f"found no object at generation {first_generation}\n"
    )


def test_json_holds_the_summary_and_the_records_as_written(cli: Callable[..., Ran], relay: Relay, results: str):
    key = drop(relay, ECHO, "t.json").run_key
    assert key is not None
    shown = cli("status", key, "--json").json()
    assert set(shown) == {
        "run_key",
        "pipeline",
        "state",
        "status",
        "message",
        "run_id",
        "run_url",
        "trigger_uri",
        "since",
        "retry_at",
        "records",
        "launch",
        "result",
        "rejection",
        "skipped",
        "retry",
        "chained_from",
        "chained_to",
        "chained",
        "later_attempts",
    }
    assert shown["later_attempts"] == []
    assert (shown["chained_from"], shown["chained_to"], shown["chained"]) == (None, [], None)
    assert shown["records"] == {"launch": naming.launch_record(results, key)}
    assert shown["launch"]["parameters"] == {**ECHO["parameters"], "run_key": key, "results_uri": results}
    assert shown["result"] is None and shown["rejection"] is None and shown["skipped"] is None
    assert (shown["state"], shown["status"], shown["trigger_uri"]) == ("launched", 202, "gs://triggers/t.json")


def test_a_rejection_shows_its_error_and_every_problem(cli: Callable[..., Ran], relay: Relay, results: str):
    outcome = drop(relay, {"pipeline": "echo", "parameters": {"count": "x"}}, "bad.json")
    assert outcome.outcome == "rejected" and outcome.run_key is not None
    ran = cli("status", "gs://triggers/bad.json")
    assert ran.code == 0
    shown = fields(ran.out)
    assert shown["state"] == ["rejected"] and shown["status"] == ["400"] and shown["error"] == ["invalid_parameters"]
    assert shown["problems"] == [
        "parameters.count: expected an integer, found string 'x'",
        "parameters.message: expected a string, found nothing",
    ]
    assert shown["run id"] == ["-"] and shown["rejected"][0].endswith("Z")
    *lines, _, pointer = ran.out.splitlines()
    assert pointer == "the trigger's own problems: fix it and check it with relay validate FILE --bucket B"
    assert lines[-1].split() == [
        "rejected",
        "rejected",
        "400",
        lines[-1].split()[3],
        naming.rejection_record(results, outcome.run_key),
    ]


def test_a_result_shows_its_outputs_and_metrics(cli: Callable[..., Ran], relay: Relay, results: str):
    key = drop(relay, ECHO, "t.json").run_key
    assert key is not None
    receipts = [
        {"source": "gs://a/1", "bytes": 10, "skipped": False, "pending": False},
        {"source": "gs://a/2", "bytes": 20, "skipped": True, "pending": False},
    ]
    outputs = {
        "receipts": receipts,
        "report_html": "gs://results/ratchet/w/local/report.html",
        "tests": {"short": {"verdict": "tightened"}, "long": {"verdict": "ok"}},
        "failed": [],
    }
    finish(relay, key, outputs=outputs, message="pushed 2 object(s), 10 bytes (1 already there)", run_id="job-7")
    ran = cli("status", key)
    assert ran.code == 0
    shown = fields(ran.out)
    assert shown["state"] == ["succeeded"] and shown["status"] == ["200"]
    assert shown["run id"] == ["run-1"] and shown["job id"] == ["job-7"]  # the backend's id, then the pipeline's
    assert cli("status", key, "--json").json()["run_id"] == "run-1"
    assert shown["message"] == ["pushed 2 object(s), 10 bytes (1 already there)"]
    assert shown["outputs"] == [
        "failed: 0 items",
        "receipts: 2 objects, 10 bytes sent (1 skipped)",
        "report_html: gs://results/ratchet/w/local/report.html",
        "tests: long ok, short tightened",
    ]
    assert shown["metrics"] == ["bytes=30  files=2"]
    assert shown["started"][0].endswith("Z") and shown["finished"][0].endswith("Z")
    record_lines = ran.out.split("\n\n")[1].splitlines()
    assert [line.split()[0] for line in record_lines] == ["RECORD", "launch", "result"]
    assert record_lines[2].endswith(naming.result_record(results, key))


def test_an_unknown_run_exits_1(cli: Callable[..., Ran], results: str):
    ran = cli("status", "echo-0123456789abcdef0123")
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"relay status: echo-0123456789abcdef0123: expected records under {results}, found none yet\n"
        "  the recent runs and their keys: relay runs\n"  # where to look next
    )


def test_a_missing_trigger_object_exits_1(cli: Callable[..., Ran]):
    ran = cli("status", "gs://triggers/gone.json")
    assert (ran.code, ran.err) == (
        1,
        "relay status: gs://triggers/gone.json: expected a trigger file, found no object\n",
    )


def test_bad_arguments_and_missing_configuration_exit_2(capsys, blobs, results: str, cli: Callable[..., Ran]):
    from tests.cli.support import run

    bad_key = cli("status", "Not-A-Key")
    assert bad_key.code == 2 and bad_key.err.startswith("relay status: RUN: expected a run key: a lower-case letter")
    unset = run(capsys, ["status", "echo-0123"], env={}, store=blobs)
    assert unset.code == 2
    assert unset.err == (
        "relay status: RELAY_RESULTS_URI: expected gs://bucket/prefix or a local folder holding the run records "
        "(or --results), found nothing\n"
    )
    typo = run(capsys, ["status", "echo-0123", "--results", results + "-typo"], env={}, store=blobs)
    assert typo.code == 2 and typo.err.startswith("relay status: --results: expected gs://bucket/prefix or a local")
    flag = run(capsys, ["status", "echo-0123", "--results", results], env={}, store=blobs)
    assert flag.code == 1 and "expected records under" in flag.err  # --results alone is enough


def test_a_file_that_did_not_run_is_followed_to_its_skip(cli: Callable[..., Ran], relay: Relay, results: str):
    key = drop(relay, b"notes", "notes.txt").run_key
    assert key is not None
    ran = cli("status", "gs://triggers/notes.txt")  # a name no trigger has: the key its skip is recorded under
    assert ran.code == 0 and ran.err == ""
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in ran.out.split("\n\n")[0].splitlines())
    assert {k: shown[k] for k in ("run key", "state", "status", "message")} == {
        "run key": key,
        "state": "skipped",
        "status": "-",
        "message": "gs://triggers/notes.txt: skipped: not a trigger file: the name does not end in .json, .yaml or "
        ".yml",
    }
    assert shown["trigger"].startswith("gs://triggers/notes.txt#") and shown["skipped"].endswith("Z")
    [record_row] = [line for line in ran.out.split("\n\n")[1].splitlines() if line.startswith("skipped ")]
    assert record_row.split()[1:3] == ["skipped", "-"] and record_row.endswith(naming.skip_record(results, key))
    assert ran.out.rstrip().endswith("not a trigger: upload a trigger file (relay validate FILE --bucket B checks one)")
    assert cli("status", key, "--wait", "--timeout", "0").code == 1  # it will never run
