"""The ratchet step: `python -m pipelines.steps.ratchet spec.json result.json`.

Parameters: `workflow` (`{"uri": ...}`, a URI string, or the workflow itself), `source` (the gs://, s3:// or file://
prefix code and data files are read from; by default the folder holding the workflow file), `destination` (a
struct with `kind` local, http or kfp and its options, credentials as secret references), `tolerance` (0.10),
`reset_baseline` with a `reason`, `run_key` and `results_uri` (where the baseline, history and reports live: it
must be the deployment's results location, which is where they go).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.steps.contract import StepContext, StepResult, StepSpec
from pipelines.steps.errors import StepError
from pipelines.steps.gate import Gate, Permit
from pipelines.steps.objects import ObjectStore, default_stores, store_for
from pipelines.steps.ratchet.baseline import SET, TIGHTENED, Call, Decision, Measurement, decide_ratchet
from pipelines.steps.ratchet.clusters import (
    ClusterConfigError,
    ClusterContext,
    Factory,
    default_factories,
    destination_kind,
    destination_name,
)
from pipelines.steps.ratchet.clusters.local import LocalCluster
from pipelines.steps.ratchet.export import (
    DEFAULT_CODE_LIMITS,
    CodeLimits,
    ExportError,
    code_location,
    data_location,
)
from pipelines.steps.ratchet.ledger import Ledger, LedgerError, describe_baseline, ledger_paths
from pipelines.steps.ratchet.placeholders import data_parts
from pipelines.steps.ratchet.report import history_entry, render_html, report_document
from pipelines.steps.ratchet.stages import (
    SKIPPED,
    VALIDATED,
    AlgorithmOutcome,
    BenchmarkOutcome,
    prepare_algorithms,
    run_benchmark,
)
from pipelines.steps.ratchet.workflow import Workflow, WorkflowError, load_workflow, parse_workflow
from relay.adapters.stores import results_store
from relay.policy import RATCHET
from relay.ports import BlobStore
from relay.records import timestamp

DEFAULT_TOLERANCE = 0.10
MAX_WORKFLOW_BYTES = 1024 * 1024
# Destination options that say where, never who: the only ones copied into the records.
_DESCRIBED = ("kind", "name", "root", "url", "preset", "call_path", "owner", "host", "experiment", "data_uri")
_LISTED = 5


@dataclass(frozen=True)
class RatchetParameters:
    workflow: str | Mapping[str, Any]  # a URI, or the workflow document itself
    source: str
    destination: Mapping[str, Any]
    tolerance: float
    reset_reason: str | None  # set only when reset_baseline is true
    run_key: str
    results_uri: str


def parse_parameters(parameters: Mapping[str, Any]) -> RatchetParameters:
    """The step's parameters, checked; StepError 400 naming the first one that is wrong."""
    workflow = parameters.get("workflow")
    if isinstance(workflow, Mapping) and set(workflow) == {"uri"}:
        workflow = workflow["uri"]
    if not (isinstance(workflow, str) and workflow) and not isinstance(workflow, Mapping):
        raise StepError(400, f"parameters.workflow: expected {{uri: ...}} or the workflow itself, found {workflow!r}")
    source = parameters.get("source") or ""
    if not isinstance(source, str):
        raise StepError(400, f"parameters.source: expected a gs://, s3:// or file:// prefix, found {source!r}")
    destination = parameters.get("destination") or {}
    if not isinstance(destination, Mapping):
        raise StepError(400, f"parameters.destination: expected a struct with a kind, found {destination!r}")
    tolerance = parameters.get("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not 0 <= tolerance <= 10:
        expected = "a fraction from 0 to 10 (0.1 is 10 %)"
        raise StepError(400, f"parameters.tolerance: expected {expected}, found {tolerance!r}")
    reset = parameters.get("reset_baseline", False)
    reason = parameters.get("reason") or ""
    if not isinstance(reset, bool) or not isinstance(reason, str):
        raise StepError(400, "parameters.reset_baseline and reason: expected true/false and a text")
    if reset and not reason.strip():
        raise StepError(400, "parameters.reason: a baseline reset needs a reason, which is recorded; found none")
    run_key = parameters.get("run_key") or ""
    results_uri = parameters.get("results_uri") or ""
    if not isinstance(run_key, str) or not isinstance(results_uri, str) or not results_uri:
        raise StepError(400, "parameters.results_uri: expected the results location (the baseline lives there)")
    return RatchetParameters(
        workflow=workflow,
        source=source,
        destination=destination,
        tolerance=float(tolerance),
        reset_reason=reason.strip() if reset else None,
        run_key=run_key or f"manual-{datetime.now(UTC):%Y%m%dT%H%M%SZ}",  # a standalone run outside Relay
        results_uri=results_uri,
    )


def ratchet(
    spec: StepSpec,
    context: StepContext,
    *,
    stores: Mapping[str, ObjectStore] | None = None,
    factories: Mapping[str, Factory] | None = None,
    results: BlobStore | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> StepResult:
    started = time.monotonic()
    parameters = parse_parameters(spec.parameters)
    # The policy first: no workflow is read, no secret resolved, no code run before it allows the request.
    permit = context.gate.admit(RATCHET, spec.parameters)
    if permit.launch is None:
        raise StepError(500, "the gate admitted a run without verifying its launch")
    # The deployment's results location, never a parameter's (one that differs was refused by the gate).
    parameters = replace(parameters, results_uri=permit.launch.results_uri)
    # Workflows, code and data files on this machine are opened beneath the tenant's code folders, never via a link.
    stores = stores or default_stores(permit.tenant.code if permit.tenant else None)
    workflow, workflow_uri = _load(parameters.workflow, stores)
    source = parameters.source or (workflow_uri.rsplit("/", 1)[0] + "/" if workflow_uri else "")
    if not source and not workflow.run_only:
        raise StepError(400, "parameters.source: expected the prefix code and data files are read from, found none")
    _admit_workflow(workflow, source, permit, context.gate)
    try:
        kind = destination_kind(parameters.destination)
        where = destination_name(parameters.destination)
        # Secrets are resolved here, inside the step, and every value is redacted from what it writes.
        allowed = {at: ref for at, ref in spec.secrets.items() if permit.bound.get(at) == ref}
        config = context.resolve(parameters.destination, allowed)
    except ClusterConfigError as exc:
        raise StepError(400, str(exc)) from None
    store = results or _results_store(parameters.results_uri)
    ledger = Ledger(
        store,
        ledger_paths(parameters.results_uri, workflow.name, where, permit.tenant.name if permit.tenant else ""),
        context.redact,
    )

    with tempfile.TemporaryDirectory(prefix="relay-ratchet-") as workdir:
        try:
            cluster = (factories or default_factories())[kind](
                config,
                ClusterContext(Path(workdir), workflow.name, blobs=store, sandbox=permit.sandbox, egress=permit.egress),
            )
        except ClusterConfigError as exc:
            raise StepError(400, str(exc)) from None
        # What the machine gave the algorithms' workers, in the run's record (only the local cluster runs them here).
        sandbox = {"sandbox": cluster.isolation.record()} if isinstance(cluster, LocalCluster) else {}
        code_limits = CodeLimits(
            max_bytes=permit.limits.code_bytes,
            max_files=permit.limits.code_files,
            max_file_bytes=min(permit.limits.code_bytes, DEFAULT_CODE_LIMITS.max_file_bytes),
        )
        try:
            algorithms = prepare_algorithms(
                workflow, cluster, source=source, stores=stores, sleep=sleep, limits=code_limits, redact=context.redact
            )
            tests = run_benchmark(workflow, cluster, algorithms)
        finally:
            cluster.close()  # the local cluster's warm workers end with the run, however it ends

    at = timestamp(clock())
    tolerances = {t.name: parameters.tolerance if t.tolerance is None else t.tolerance for t in workflow.tests}
    runs = [
        Measurement(t.name, tuple(Call(c.ok, c.seconds) for c in t.calls), tolerances[t.name], _slack(workflow, t.name))
        for t in tests
    ]
    outputs: dict[str, Any] = {
        "workflow": workflow.name,
        "destination": where,
        "algorithms": {a.name: {"state": a.state, "stage": a.stage, "error": a.error} for a in algorithms},
        **sandbox,
    }
    try:
        _, decision = ledger.ratchet(
            lambda stored: decide_ratchet(
                stored, runs, run_key=parameters.run_key, at=at, reset_reason=parameters.reset_reason
            ),
            describe_baseline(workflow.name, where, parameters.run_key, at),
            replace_malformed=parameters.reset_reason is not None,
        )
    except LedgerError as exc:
        return StepResult(message=f"ratchet {workflow.name}: the baseline was not updated: {exc}", status=503,
                          outputs=outputs)  # fmt: skip
    status, message = _conclude(workflow, where, algorithms, tests, decision)
    paths = ledger.paths
    links = {"report_html": paths.report_html, "report_json": paths.report_json}
    links |= {"baseline": paths.baseline, "history": paths.history}
    described = {k: v for k, v in parameters.destination.items() if k in _DESCRIBED} | {"kind": kind, "name": where}
    report = report_document(
        workflow=workflow.name,
        destination=described,
        run_key=parameters.run_key,
        at=at,
        status=status,
        message=message,
        parameters={
            "workflow": workflow_uri or "inline",
            "source": source,
            "tolerance": parameters.tolerance,
            "reset_baseline": parameters.reset_reason is not None,
            "reason": parameters.reset_reason or "",
        },
        algorithms=algorithms,
        tests=tests,
        runs=runs,
        decision=decision,
        links=links,
    )
    report |= sandbox
    try:
        history = ledger.append_history(
            history_entry(
                run_key=parameters.run_key,
                at=at,
                status=status,
                tolerance=parameters.tolerance,
                reset_reason=parameters.reset_reason,
                algorithms=algorithms,
                tests=tests,
                decision=decision,
            )
        )
        ledger.write_reports(report, render_html(report, history))
    except LedgerError as exc:
        status, message = max(status, 503), f"{message}; the report was not written: {exc}"
    outputs |= links | {
        "tests": {v.test: _test_output(v.to_json(), tests) for v in decision.verdicts},
        "failed": _failures(algorithms, tests, decision),
    }
    return StepResult(message=message, status=status, outputs=outputs, metrics=_metrics(algorithms, tests, decision,
                      time.monotonic() - started))  # fmt: skip


def _admit_workflow(workflow: Workflow, source: str, permit: Permit, gate: Gate) -> None:
    """StepError 403 for a workflow that reads code or data from where the policy does not allow, or asks for more
    tests, repeats or time than its ceilings."""
    limits = permit.limits
    asked: list[tuple[str, str, float, float]] = [("test_info.tests", "tests", limits.tests, len(workflow.tests))]
    for test in workflow.tests:
        asked += [(f"test {test.name}", "repeat", limits.repeats, test.repeat)]
        asked += [(f"test {test.name}", "timeout (s)", limits.timeout, test.timeout)]
    asked += [(f"algorithm {a.name}", "timeout (s)", limits.timeout, a.timeout) for a in workflow.algorithms]
    problems = [
        f"{where}: expected {what} of at most {ceiling:g} (policy limits), found {found:g}"
        for where, what, ceiling, found in asked
        if found > ceiling
    ]
    if problems:
        raise StepError(403, "policy_denied: " + "; ".join(problems))
    if workflow.run_only:
        return  # nothing is read: the algorithms are on the destination already
    for algorithm in workflow.algorithms:
        try:
            locations = [code_location(algorithm, source)]
            locations += [data_location(source, *data_parts(uri, algorithm.name)) for uri in algorithm.data_files]
        except ExportError:
            continue  # reported as this algorithm's export failure, with nothing read
        for location in locations:
            gate.check_location(permit.tenant, location, f"algorithm {algorithm.name}", key="code")


def _load(workflow: str | Mapping[str, Any], stores: Mapping[str, ObjectStore]) -> tuple[Workflow, str]:
    try:
        if not isinstance(workflow, str):
            entrypoint = workflow.get("test_info", {}).get("entrypoint") if isinstance(workflow, Mapping) else None
            return parse_workflow(workflow, default_name=str(entrypoint or "workflow")), ""
        store = store_for(workflow, stores)
        items = list(store.list(workflow))
        if len(items) != 1 or items[0].size > MAX_WORKFLOW_BYTES:
            found = f"{len(items)} object(s)" if len(items) != 1 else f"{items[0].size} bytes"
            raise StepError(400, f"{workflow}: expected one workflow file of at most 1 MiB, found {found}")
        with store.open(items[0]) as stream:
            data = stream.read()
        name = items[0].name.rsplit("/", 1)[-1].removesuffix(".json")
        return load_workflow(data, where=workflow, default_name=name), workflow
    except WorkflowError as exc:
        raise StepError(400, str(exc)) from None


def _results_store(results_uri: str) -> BlobStore:
    # The local root only holds the lock for gs:// results, which take none: any folder will do.
    return results_store(results_uri, tempfile.gettempdir())


def _slack(workflow: Workflow, test: str) -> float:
    return next(t.slack for t in workflow.tests if t.name == test)


def _conclude(
    workflow: Workflow,
    where: str,
    algorithms: Sequence[AlgorithmOutcome],
    tests: Sequence[BenchmarkOutcome],
    decision: Decision,
) -> tuple[int, str]:
    """The status (200; 502 when an algorithm or a test failed; 409 when only the ratchet was violated), and why:
    what was sent, what validated, what was skipped, what passed, and every failure."""
    validated = sum(a.state == VALIDATED for a in algorithms)
    skipped = sum(a.state == SKIPPED for a in algorithms)
    passed = sum(t.passed for t in tests)
    head = f"ratchet {workflow.name} on {where}: {_sent(workflow, algorithms)}; "
    head += f"{validated} of {len(algorithms)} algorithm(s) validated"
    head += f" ({skipped} skipped: a dependency did not validate), " if skipped else ", "
    head += f"{passed} of {len(tests)} test(s) passed"
    failures = _failures(algorithms, tests, decision)
    if not failures:
        moved = [
            f"bar {label} for {', '.join(v.test for v in decision.verdicts if v.verdict == verdict)}"
            for verdict, label in ((SET, "set"), (TIGHTENED, "tightened"))
            if any(v.verdict == verdict for v in decision.verdicts)
        ]
        return 200, head + "; " + ("; ".join(moved) or "the bar held")
    status = 502 if validated < len(algorithms) or passed < len(tests) else 409
    more = len(failures) - _LISTED
    listed = "; ".join(failures[:_LISTED]) + (f"; and {more} more" if more > 0 else "")
    return status, f"{head}; failed: {listed}"


def _sent(workflow: Workflow, algorithms: Sequence[AlgorithmOutcome]) -> str:
    """What went to the destination: files and bytes, and of how many algorithms (the others failed to export or
    deploy, and say why among the failures)."""
    if workflow.run_only:
        return "nothing sent (run_only: the algorithms are there already)"
    sent = [a for a in algorithms if a.sent]
    files = sum(len(a.files) for a in sent)
    size = sum(int(f.get("bytes", 0)) for a in sent for f in a.files)
    return f"sent {files} file(s), {size:,} bytes, for {len(sent)} of {len(algorithms)} algorithm(s)"


def _failures(
    algorithms: Sequence[AlgorithmOutcome], tests: Sequence[BenchmarkOutcome], decision: Decision
) -> list[str]:
    found = [f"algorithm {a.name} {a.state} at {a.stage}: {a.error}" for a in algorithms if a.state != VALIDATED]
    outcomes = {t.name: t for t in tests}
    for verdict in decision.failed:
        outcome = outcomes.get(verdict.test)
        cause = ""
        if outcome is not None and outcome.not_run:
            cause = f": not run ({outcome.not_run})"
        elif outcome is not None and not outcome.passed:
            errors = [c.error for c in outcome.calls if not c.ok]
            cause = f": {len(errors)} of {len(outcome.calls)} call(s) failed ({errors[0]})"
        elif verdict.median is not None and verdict.limit is not None:
            cause = f": median {verdict.median:.6g} s over the limit {verdict.limit:.6g} s"
            cause += f" (bar {verdict.bar_before:.6g} s)" if verdict.bar_before is not None else ""
        label = f"{verdict.verdict} ({verdict.reason})" if verdict.reason else verdict.verdict
        found.append(f"test {verdict.test} {label}{cause}")
    return found


def _test_output(verdict: Mapping[str, Any], tests: Sequence[BenchmarkOutcome]) -> dict[str, Any]:
    outcome = next((t for t in tests if t.name == verdict["test"]), None)
    calls = outcome.calls if outcome is not None else ()
    return {
        "verdict": verdict["verdict"],
        "reason": verdict["reason"],
        "median_seconds": verdict["median_seconds"],
        "bar_seconds": verdict["bar_after"],
        "limit_seconds": verdict["limit_seconds"],
        "calls": len(calls),
        "failed_calls": sum(not c.ok for c in calls),
        "timed_out_calls": sum(c.timed_out for c in calls),
    }


def _metrics(
    algorithms: Sequence[AlgorithmOutcome], tests: Sequence[BenchmarkOutcome], decision: Decision, seconds: float
) -> dict[str, Any]:
    return {
        "algorithms": len(algorithms),
        "validated": sum(a.state == VALIDATED for a in algorithms),
        "tests": len(tests),
        "passed": sum(t.passed for t in tests),
        "calls": sum(len(t.calls) for t in tests),
        "violated": len(decision.violated),
        "tightened": sum(v.verdict == TIGHTENED for v in decision.verdicts),
        "seconds": round(seconds, 3),
    }
