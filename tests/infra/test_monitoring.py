"""infra/monitoring: the metrics and alert policies are valid by Google's discovery documents, deploy.sh and
Terraform deploy the same ones, every field they read is one the functions write, and each alert fires on the log
lines Relay writes when what it watches happens, and stays quiet otherwise."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from relay import lifecycle, logs, naming, records, runtime
from relay.outcome import MEASURED
from relay.ports import RunState
from relay.results import record_result
from relay.service import Relay
from relaycli.monitoring import MonitoringError, alerts, metrics, render, values_for
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.functions.test_lifecycle_entry_points import message
from tests.functions.test_main import event, outcome_lines, post
from tests.infra.hcl import Scope, unquote
from tests.infra.monitoring_filter import FilterError, extract, matches, parse
from tests.infra.support import Inputs, dry_run, gcloud_commands, split_command, terraform_module
from tests.policies import policy

DATA = Path(__file__).parents[1] / "data" / "monitoring"
RESULTS = "gs://results/relay"
VALUES = values_for("relay")
CHANNELS = ["projects/demo-project/notificationChannels/42"]
# What every outcome line carries (relay.logs.JsonFormatter, relay.outcome.Outcome.fields), and what it may.
LINE_FIELDS = {"severity", "message", "time", "logger", "outcome", "event_id", "trigger_uri", "run_key", "run_id",
               "pipeline", *MEASURED}  # fmt: skip
POLICY = policy(
    """
tenants:
  - name: lab
    triggers: [gs://relay-triggers/nightly/]
    topics: [projects/relay-demo/topics/relay-triggers]
    expected_times: {echo: 30m}
    expect:
      - {id: hourly, prefix: gs://relay-triggers/nightly/, when: every 1h}
"""
)


# --- valid by the discovery documents ----------------------------------------------------------------------------


def _check(value: Any, schema: Mapping[str, Any], schemas: Mapping[str, Any], where: str) -> None:
    """`value` as the API reads a request body: every field known and writable, enums and types as declared."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), f"{where}: expected an object, found {value!r}"
        for name, item in value.items():
            assert name in schema["properties"], f"{where}.{name}: not a field of the schema"
            field = schema["properties"][name]
            assert not field.get("readOnly"), f"{where}.{name}: output only"
            _check(item, field, schemas, f"{where}.{name}")
    elif kind == "object":  # a map
        assert isinstance(value, dict), where
        for name, item in value.items():
            _check(item, schema["additionalProperties"], schemas, f"{where}.{name}")
    elif kind == "array":
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            _check(item, schema["items"], schemas, f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where}: expected a string, found {value!r}"
        if "enum" in schema:
            assert value in schema["enum"], f"{where}: {value!r} is none of {schema['enum']}"
        if schema.get("format") == "google-duration":
            assert re.fullmatch(r"\d+(\.\d{1,9})?s", value), f"{where}: not a duration: {value!r}"
        if schema.get("format") in ("int64", "uint64"):
            assert re.fullmatch(r"-?\d+", value), where
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer"
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: expected a number"
    elif kind == "boolean":
        assert isinstance(value, bool), where


def _discovery(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def test_every_metric_is_a_log_metric_of_the_logging_api():
    document = _discovery("logging.v2.LogMetric.json")
    for metric in metrics(VALUES):
        _check(metric, {"$ref": "LogMetric"}, document["schemas"], metric["name"])
        # What the API's own words say a name and a label may be.
        assert re.fullmatch(r"[A-Za-z0-9_.\-/]{1,100}", metric["name"])
        declared = {label["key"] for label in metric["metricDescriptor"]["labels"]}
        assert declared == set(metric["labelExtractors"]), metric["name"]
        assert ("valueExtractor" in metric) == (metric["metricDescriptor"]["valueType"] == "DISTRIBUTION")


def test_every_alert_is_an_alert_policy_of_the_monitoring_api():
    document = _discovery("monitoring.v3.AlertPolicy.json")
    for alert in alerts(VALUES, CHANNELS):
        _check(alert, {"$ref": "AlertPolicy"}, document["schemas"], alert["displayName"])
        [condition] = alert["conditions"]
        if "conditionMatchedLog" in condition:  # the API requires a rate limit of a log-match policy
            assert alert["alertStrategy"]["notificationRateLimit"]["period"]
        assert alert["notificationChannels"] == CHANNELS


def test_the_check_refuses_what_the_api_would():
    document = _discovery("monitoring.v3.AlertPolicy.json")
    [alert, *_] = alerts(VALUES, CHANNELS)
    for broken in (
        {**alert, "combiner": "SOMETIMES"},
        {**alert, "severity_level": "high"},
        {**alert, "conditions": [{"displayName": "x", "conditionThreshold": {"comparison": "MORE"}}]},
        {**alert, "alertStrategy": {"autoClose": "1 day"}},
    ):
        with pytest.raises(AssertionError):
            _check(broken, {"$ref": "AlertPolicy"}, document["schemas"], "broken")


# --- one definition: what deploy.sh hands to gcloud is what Terraform declares ------------------------------------


def _expand(module: Any, body: Mapping[str, Any], scope: Scope | None) -> dict[str, Any]:
    """A block's arguments and nested blocks, dynamic ones expanded at any depth."""
    found: dict[str, Any] = {}
    for key, raw in body.items():
        if key.startswith("__") or key in ("for_each", "depends_on", "count"):
            continue
        if key == "dynamic":
            for dynamic in raw:
                for label, spec in dynamic.items():
                    name = unquote(label)
                    collection = module.value(spec["for_each"], scope)
                    pairs = collection.items() if isinstance(collection, dict) else enumerate(collection)
                    for each_key, each_value in pairs:
                        names = {**(scope.names if scope else {}), name: {"key": each_key, "value": each_value}}
                        for content in spec["content"]:
                            found.setdefault(name, []).append(_expand(module, content, Scope(names)))
        elif isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
            found[key] = [_expand(module, item, scope) for item in raw]
        else:
            found[key] = module.value(raw, scope)
    return found


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _api(block: Any) -> Any:
    """Terraform's snake_case blocks as the API's camelCase body: one-element blocks become objects, nulls go."""
    if isinstance(block, dict):
        return {
            _camel(k): v if k == "label_extractors" else _api(v)  # a map: its keys are the labels' own
            for k, v in block.items()
            if v is not None and k not in ("project",)
        }
    if isinstance(block, list):
        return [_api(item) for item in block]
    return block


_SINGLE = ("metricDescriptor", "bucketOptions", "exponentialBuckets", "documentation", "conditionThreshold",
           "conditionMatchedLog", "alertStrategy", "notificationRateLimit")  # fmt: skip


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unwrap(v[0] if k in _SINGLE and isinstance(v, list) else v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


def _numbers(value: Any) -> Any:
    """JSON numbers as Terraform holds them (floats and ints alike)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _declared(kind: str, catalog: Path, inputs: Inputs) -> list[dict[str, Any]]:
    module = terraform_module(inputs, catalog)
    return [_unwrap(_api(_expand(module, body, scope))) for _, _, body, scope in module.scoped_instances(kind)]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "push.yaml").write_text("{}\n")
    return tmp_path


def _deployed(tmp_path: Path, inputs: Inputs, *extra: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The bodies deploy.sh hands to gcloud: the files its dry run names (rendered into the staging folder)."""
    (tmp_path / "stage").mkdir()
    plan = dry_run(*inputs.script_args(), f"--stage={tmp_path / 'stage'}", *extra)
    created: dict[str, list[dict[str, Any]]] = {"metrics": [], "policies": []}
    for argv in gcloud_commands(plan):
        command = split_command(argv)
        if command.path[-1] == "create" and command.path[-2] in created:
            source = command.flags.get("config-from-file") or command.flags.get("policy-from-file")
            created[command.path[-2]].append(json.loads(Path(str(source)).read_text()))
    return created["metrics"], created["policies"]


@pytest.mark.parametrize("inputs", [Inputs(), Inputs(prefix="relay-dev")], ids=["relay", "relay-dev"])
def test_terraform_declares_the_metrics_and_alerts_the_script_deploys(inputs: Inputs, catalog: Path, tmp_path: Path):
    channel = "projects/demo-project/notificationChannels/7"
    deployed_metrics, deployed_alerts = _deployed(tmp_path, inputs, f"--alert-channel={channel}", "--alert-failures=4")
    module_inputs = {"alert_channels": [channel], "alert_failures_in_a_row": 4}
    declared_metrics = _declared("google_logging_metric", catalog, inputs)
    assert _numbers(sorted(declared_metrics, key=lambda m: m["name"])) == _numbers(
        sorted(deployed_metrics, key=lambda m: m["name"])
    )
    module = terraform_module(inputs, catalog)
    module.variables.update(module_inputs)
    declared_alerts = [
        _unwrap(_api(_expand(module, body, scope)))
        for _, _, body, scope in module.scoped_instances("google_monitoring_alert_policy")
    ]
    assert len(declared_alerts) == len(deployed_alerts) == 5
    assert _numbers(sorted(declared_alerts, key=lambda a: a["displayName"])) == _numbers(
        sorted(deployed_alerts, key=lambda a: a["displayName"])
    )
    assert all(a["notificationChannels"] == [channel] for a in deployed_alerts)
    assert any("attempt>=4" in json.dumps(a) for a in deployed_alerts)
    assert {m["name"] for m in deployed_metrics} >= {f"{inputs.prefix}_deliveries"}


def test_the_renderer_refuses_what_terraform_would_read_otherwise(tmp_path: Path):
    with pytest.raises(MonitoringError, match="placeholders"):
        render("a: ${prefix} ${other}", {"prefix": "relay"}, "x")
    with pytest.raises(MonitoringError, match="unused"):
        render("a: ${prefix}", {"prefix": "relay", "spare": "1"}, "x")
    with pytest.raises(MonitoringError, match="template syntax"):
        render("a: ${prefix} %{ if x }", {"prefix": "relay"}, "x")
    with pytest.raises(MonitoringError, match="channel"):
        alerts(VALUES, ["my-pager"])
    with pytest.raises(MonitoringError, match="at least"):
        values_for("relay", failures_in_a_row=1)


# --- the fields: what the definitions read is what the functions write -------------------------------------------


def _definitions() -> Iterator[str]:
    for metric in metrics(VALUES):
        yield metric["filter"]
        yield from metric["labelExtractors"].values()
        yield metric.get("valueExtractor", "")
    for alert in alerts(VALUES, []):
        for condition in alert["conditions"]:
            logged = condition.get("conditionMatchedLog")
            if logged:
                yield logged["filter"]
                yield from logged.get("labelExtractors", {}).values()


def test_every_field_read_is_one_an_outcome_line_carries():
    read = {name for text in _definitions() for name in re.findall(r"jsonPayload\.([A-Za-z_]+)", text)}
    assert read and read <= LINE_FIELDS, read - LINE_FIELDS
    assert "logger" in read  # every filter keeps to Relay's own lines


def test_the_evaluator_refuses_what_it_cannot_read():
    for text in ('jsonPayload.a="x" OR jsonPayload.b="y"', 'NOT jsonPayload.a="x"', "jsonPayload.a=~\"x\"",
                 'jsonPayload.a="x" AND', 'jsonPayload.a>("x" OR "y")', "jsonPayload.a=x"):  # fmt: skip
        with pytest.raises(FilterError):
            parse(text)
    assert matches("jsonPayload.n>=3", {"jsonPayload": {"n": 3}}) and not matches("jsonPayload.n>=3", {})
    assert not matches("jsonPayload.n>=3", {"jsonPayload": {"n": "9"}})  # a string is no number


# --- each alert against the lines Relay writes ------------------------------------------------------------------


def _entries(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outcome lines as Cloud Logging stores a function's JSON output: the line is the entry's jsonPayload."""
    return [{"jsonPayload": line, "severity": line["severity"], "resource": {"type": "cloud_run_revision"}}
            for line in lines]  # fmt: skip


def _points(metric: Mapping[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a log-based metric records of the entries: a point per match, with its labels (and value)."""
    points = []
    for entry in entries:
        if matches(metric["filter"], entry):
            labels = {k: str(extract(v, entry) or "") for k, v in metric["labelExtractors"].items()}
            value = extract(metric["valueExtractor"], entry) if "valueExtractor" in metric else 1
            points.append({"metric": {"type": f"logging.googleapis.com/user/{metric['name']}", "labels": labels},
                           "resource": entry["resource"], "value": value})  # fmt: skip
    return points


def _fires(alert: Mapping[str, Any], entries: list[dict[str, Any]], series: list[dict[str, Any]] = ()) -> bool:  # type: ignore[assignment]
    """Whether the alert's condition holds over one alignment period holding `entries` (and Pub/Sub's `series`)."""
    [condition] = alert["conditions"]
    if "conditionMatchedLog" in condition:
        return any(matches(condition["conditionMatchedLog"]["filter"], entry) for entry in entries)
    threshold = condition["conditionThreshold"]
    points = [*series, *(p for metric in metrics(VALUES) for p in _points(metric, entries))]
    chosen = [p for p in points if matches(threshold["filter"], p)]
    [aggregation] = threshold["aggregations"]
    groups: dict[tuple[str, ...], float] = {}
    for point in chosen:
        key = tuple(str(extract(f"EXTRACT({f})", point)) for f in aggregation.get("groupByFields", []))
        combine = max if aggregation["perSeriesAligner"] == "ALIGN_MAX" else (lambda a, b: a + b)
        groups[key] = combine(groups.get(key, 0.0), float(point["value"]))
    compare = {"COMPARISON_GT": lambda v: v > threshold["thresholdValue"]}[threshold["comparison"]]
    return any(compare(total) for total in groups.values())


def _alert(words: str) -> dict[str, Any]:
    [alert] = [a for a in alerts(VALUES, []) if words in a["displayName"]]
    return alert


@pytest.fixture
def governed(relay: Relay, store: MemoryBlobStore) -> Iterator[Relay]:
    logs.configure()
    installed = replace(relay, policy=POLICY)
    runtime.install(installed)
    yield installed
    runtime.install(None)


def _trigger(store: MemoryBlobStore, number: int, document: object) -> None:
    generation = store.write(f"gs://relay-triggers/nightly/t{number}.json", json.dumps(document).encode())
    storage = event("storage_finalized", generation=str(generation))
    storage.data["name"] = f"nightly/t{number}.json"
    assert post("on_object_finalized", storage) == 200


def test_rejections_alert_above_the_threshold_per_tenant(governed: Relay, store: MemoryBlobStore, capsys):
    bad = {"pipeline": "echo", "parameters": {"message": 7}}
    for number in range(10):
        _trigger(store, number, bad)
    lines = outcome_lines(capsys.readouterr().out)
    assert next((line["outcome"], line["tenant"], line["code"]) for line in lines) == (
        "rejected", "lab", "invalid_parameters"
    )  # fmt: skip
    rejections = _alert("rejections")
    assert not _fires(rejections, _entries(lines))  # 10: at the threshold, not above
    _trigger(store, 10, bad)
    lines += outcome_lines(capsys.readouterr().out)
    assert _fires(rejections, _entries(lines))
    launched = {"pipeline": "echo", "parameters": {"message": "hi"}}
    _trigger(store, 11, launched)
    deliveries = next(m for m in metrics(VALUES) if m["name"] == "relay_deliveries")
    counted = _points(deliveries, _entries(outcome_lines(capsys.readouterr().out)))
    assert [p["metric"]["labels"] for p in counted] == [
        {"outcome": "launched", "code": "", "tenant": "lab", "pipeline": "echo"}
    ]
    latency = next(m for m in metrics(VALUES) if m["name"] == "relay_launch_latency")
    assert _points(latency, _entries(lines)) == []  # rejections have no launch latency


def test_a_stuck_run_alerts_and_a_run_within_its_time_does_not(governed: Relay, backend: FakeBackend, capsys):
    _trigger(governed.store, 1, {"pipeline": "echo", "parameters": {"message": "hi"}})  # type: ignore[arg-type]
    launched = outcome_lines(capsys.readouterr().out)
    latency = next(m for m in metrics(VALUES) if m["name"] == "relay_launch_latency")
    assert [p["value"] for p in _points(latency, _entries(launched))] == [2000]
    backend.states["run-1"] = RunState("running", started_at=NOW)
    stuck = _alert("stuck")
    within = lifecycle.reconcile(replace(governed, clock=lambda: NOW + timedelta(minutes=20)))
    assert not _fires(stuck, _entries([line.fields() | {"logger": "relay", "severity": line.severity}
                                       for line in within.lines]))  # fmt: skip
    runtime.install(replace(governed, clock=lambda: NOW + timedelta(minutes=45)))
    assert post("on_schedule", message("9", {}, b"")) == 200
    lines = outcome_lines(capsys.readouterr().out)
    assert _fires(stuck, _entries(lines))
    assert not _fires(_alert("absent"), _entries([line for line in lines if line["outcome"] == "stuck"]))


def _end(store: MemoryBlobStore, key: str, attempt: int, succeeded: bool) -> None:
    launch = {"run_key": key, "tenant": "lab", "pipeline": "echo", "trigger": {"attempt": attempt, "event_id": "e"}}
    store.write(naming.launch_record(RESULTS, key), records.encode(launch))
    record = records.result_record(
        run_key=key, pipeline="echo", backend="fake", run_id="r", succeeded=succeeded, message="", outputs={},
        metrics={}, started=NOW, finished=NOW + timedelta(minutes=3),
    )  # fmt: skip
    assert record_result(store, None, RESULTS, record)


def test_failures_in_a_row_alert_on_the_attempt_that_reaches_the_count(governed: Relay, capsys):
    failures = _alert("failures in a row")
    _end(governed.store, "lab--a", 1, False)  # type: ignore[arg-type]
    _end(governed.store, "lab--a-attempt-2", 2, False)  # type: ignore[arg-type]
    _end(governed.store, "lab--b-attempt-3", 3, True)  # type: ignore[arg-type]
    quiet = outcome_lines(capsys.readouterr().out)
    assert [line["outcome"] for line in quiet] == ["ended"] * 3 and not _fires(failures, _entries(quiet))
    _end(governed.store, "lab--a-attempt-3", 3, False)  # type: ignore[arg-type]
    lines = outcome_lines(capsys.readouterr().out)
    assert _fires(failures, _entries(lines))
    ends = next(m for m in metrics(VALUES) if m["name"] == "relay_run_ends")
    assert [p["metric"]["labels"]["state"] for p in _points(ends, _entries(quiet + lines))] == [
        "failed", "failed", "succeeded", "failed"
    ]  # fmt: skip
    duration = next(m for m in metrics(VALUES) if m["name"] == "relay_run_duration")
    assert {p["value"] for p in _points(duration, _entries(lines))} == {180.0}


def test_an_absence_alerts_once_and_an_arrival_keeps_it_quiet(governed: Relay, store: MemoryBlobStore, capsys):
    absent = _alert("absent")
    clock = NOW + timedelta(hours=1, minutes=1)
    # The sample event's time is NOW: an arrival an hour and more later must not be dropped as stale.
    governed = replace(governed, settings=replace(governed.settings, max_event_age=86400))
    runtime.install(replace(governed, clock=lambda: clock))
    assert post("on_schedule", message("9", {}, b"")) == 200
    first = outcome_lines(capsys.readouterr().out)
    assert _fires(absent, _entries(first))
    assert post("on_schedule", message("10", {}, b"")) == 200  # the next tick: nothing new to alert on
    assert not _fires(absent, _entries(outcome_lines(capsys.readouterr().out)))
    # The next hour something arrives: its window closes quiet.
    runtime.install(replace(governed, clock=lambda: clock + timedelta(minutes=30)))
    _trigger(store, 1, {"pipeline": "echo", "parameters": {"message": "hi"}})
    runtime.install(replace(governed, clock=lambda: clock + timedelta(hours=1)))
    assert post("on_schedule", message("11", {}, b"")) == 200
    assert not _fires(absent, _entries(outcome_lines(capsys.readouterr().out)))
    counted = next(m for m in metrics(VALUES) if m["name"] == "relay_absences")
    assert [p["metric"]["labels"] for p in _points(counted, _entries(first))] == [
        {"tenant": "lab", "expectation": "hourly"}
    ]


def test_dead_letters_alert_while_the_dead_letter_subscription_holds_any():
    """Pub/Sub's own metric, no log line: the series its filter selects, for this deployment's subscription."""

    def series(subscription: str, undelivered: int) -> dict[str, Any]:
        return {"resource": {"type": "pubsub_subscription", "labels": {"subscription_id": subscription}},
                "metric": {"type": "pubsub.googleapis.com/subscription/num_undelivered_messages", "labels": {}},
                "value": undelivered}  # fmt: skip

    dead_letters = _alert("dead letters")
    assert _fires(dead_letters, [], [series("relay-dead-letter", 1)])
    assert not _fires(dead_letters, [], [series("relay-dead-letter", 0)])
    assert not _fires(dead_letters, [], [series("other-subscription", 5)])


def test_reconcile_lag_counts_the_ends_reconcile_recorded(governed: Relay, backend: FakeBackend, capsys):
    _trigger(governed.store, 1, {"pipeline": "echo", "parameters": {"message": "hi"}})  # type: ignore[arg-type]
    capsys.readouterr()
    backend.states["run-1"] = RunState("failed", finished_at=NOW - timedelta(minutes=4), failure="user")
    assert post("on_schedule", message("9", {}, b"")) == 200
    lag = next(m for m in metrics(VALUES) if m["name"] == "relay_reconcile_lag")
    [point] = _points(lag, _entries(outcome_lines(capsys.readouterr().out)))
    assert point["metric"]["labels"] == {"tenant": "lab", "pipeline": "echo"} and point["value"] > 0
