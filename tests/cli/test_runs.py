from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from relay.adapters.routing import RoutingBlobStore
from tests.cli.support import ECHO, Ran, drop, relay_on


def drop_at(blobs: RoutingBlobStore, results: str, minutes_ago: int, document: object, name: str) -> str:
    relay = relay_on(blobs, results, datetime.now(UTC) - timedelta(minutes=minutes_ago))
    key = drop(relay, document, name).run_key
    assert key is not None
    return key


def test_newest_first_with_state_status_pipeline_age_and_message(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    oldest = drop_at(blobs, results, 180, ECHO, "a.json")
    rejected = drop_at(blobs, results, 3, {"pipeline": "echo", "x": 1}, "b.json")
    newest = drop_at(blobs, results, 0, {**ECHO, "run_key": "nightly-2026-11-21"}, "c.json")
    ran = cli("runs")
    assert ran.code == 0 and ran.err == ""
    header, *rows = ran.out.splitlines()
    assert header.split() == ["RUN", "KEY", "STATE", "STATUS", "PIPELINE", "AGE", "MESSAGE"]
    assert [row.split()[:5] for row in rows] == [
        [newest, "launched", "202", "echo", "0s"],
        [rejected, "rejected", "400", "-", "3m"],  # an unreadable document names no pipeline
        [oldest, "launched", "202", "echo", "3h"],
    ]
    assert rows[0].endswith("run run-1 created on fake")
    message = rows[1][header.index("MESSAGE") :]  # a rejection's first problem, truncated to one line
    assert message == "x: expected one of the keys version, pipeline, parameters, run_key, l..."
    assert len(message) == 72


def test_limit_keeps_the_newest(cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str):
    keys = [drop_at(blobs, results, minutes, ECHO, f"{minutes}.json") for minutes in (30, 20, 10)]
    ran = cli("runs", "--limit", "2")
    assert [row.split()[0] for row in ran.out.splitlines()[1:]] == [keys[2], keys[1]]


def test_json_is_a_list_of_summaries_with_ages(cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str):
    key = drop_at(blobs, results, 10, ECHO, "a.json")
    [run] = cli("runs", "--json").json()
    assert set(run) == {
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
        "chained_from",
        "chained_to",
        "age_seconds",
    }
    assert (run["run_key"], run["state"], run["status"], run["run_id"]) == (key, "launched", 202, "run-1")
    assert 600 <= run["age_seconds"] < 660 and run["since"].endswith("Z")


def test_no_runs_yet(cli: Callable[..., Ran], results: str):
    # Not a dead end: where the runs would come from.
    assert (
        cli("runs").out
        == f"no runs under {results}\n\nsend a trigger: relay trigger FILE --bucket B (examples/ has some)\n"
    )
    assert cli("runs", "--json").json() == []


def test_a_limit_below_one_is_a_usage_error(cli: Callable[..., Ran]):
    ran = cli("runs", "--limit", "0")
    assert ran.code == 2
    assert ran.err == (
        "relay runs: argument --limit: expected a whole number of runs, 1 or more, found '0' "
        "(see 'relay runs --help')\n"
    )
    # One reading for relay runs and relay sync: ASCII digits only, as sync took them; runs took " 3" and "+3".
    for command in ("runs", "sync"):
        for given in ("+3", " 3", "\u0663", "-1"):
            refused = cli(command, "--limit", given)
            assert refused.code == 2 and f"expected a whole number of runs, 1 or more, found {given!r}" in refused.err


def test_a_rejection_shows_its_first_problem_and_how_many_more(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    drop_at(blobs, results, 1, {"pipeline": "echo", "parameters": {"count": "x"}}, "p.json")
    [row] = cli("runs").out.splitlines()[1:]
    assert row.endswith("parameters.count: expected an integer, found string 'x' (+1 more)")
    [run] = cli("runs", "--json").json()
    assert run["message"].startswith("gs://triggers/p.json: 2 problem(s): parameters.count")  # JSON: as recorded


def test_skipped_deliveries_are_listed_and_kept_apart_with_state_skipped(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    """ "Why did my file not run?": the stray name and the empty upload are listed among the runs, and alone with
    --state skipped; a run leaves them out with --state of its own."""
    launched = drop_at(blobs, results, 30, ECHO, "a.json")
    stray = drop_at(blobs, results, 20, ECHO, "notes.txt")
    empty = drop_at(blobs, results, 10, b"", "empty.json")
    everything = cli("runs")
    header, *rows = everything.out.splitlines()
    assert [row.split()[:5] for row in rows] == [
        [empty, "skipped", "-", "-", "10m"],
        [stray, "skipped", "-", "-", "20m"],
        [launched, "launched", "202", "echo", "30m"],
    ]
    assert rows[0][header.index("MESSAGE") :] == (
        "gs://triggers/empty.json: skipped: zero-byte object: an upload in pro..."
    )
    only = cli("runs", "--state", "skipped", "--json").json()
    assert [(run["run_key"], run["state"], run["trigger_uri"]) for run in only] == [
        (empty, "skipped", "gs://triggers/empty.json"),
        (stray, "skipped", "gs://triggers/notes.txt"),
    ]
    assert [run["run_key"] for run in cli("runs", "--state", "launched", "--json").json()] == [launched]
