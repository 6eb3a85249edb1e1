"""The ratchet's stages against one destination: export, deploy and validate each algorithm in order, then benchmark.

Unlike the seed, a failure stops nothing but what depends on it: an algorithm whose dependency (`depends_on`, or
an `algo://.my/<name>` call in its code) failed is exported and deployed but not validated, and is reported as
skipped; the others carry on. Benchmark tests run only against a validated entrypoint; otherwise each is recorded
as not run, which the ratchet counts as failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.steps.objects import ObjectStore
from pipelines.steps.ratchet.clusters import CallResult, Cluster, ClusterError
from pipelines.steps.ratchet.export import DEFAULT_CODE_LIMITS, CodeLimits, ExportError, export_algorithm
from pipelines.steps.ratchet.placeholders import data_files_of, rewrite_value
from pipelines.steps.ratchet.workflow import Algorithm, Workflow

VALIDATED, FAILED, SKIPPED = "validated", "failed", "skipped"
EXPORT, DEPLOY, VALIDATE = "export", "deploy", "validate"
MAX_ATTEMPTS = 3  # bounded, unlike the seed's retry-forever on "version hash" errors
RETRY_DELAY = 1.0  # seconds, times the attempt number
_PREVIEW_CHARS = 300


@dataclass(frozen=True)
class CallRecord:
    ok: bool
    seconds: float
    error: str = ""
    timed_out: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 6), "error": self.error, "timed_out": self.timed_out}


@dataclass(frozen=True)
class AlgorithmOutcome:
    name: str
    state: str  # validated, failed, skipped
    stage: str = ""  # where it failed or stopped: export, deploy, validate
    error: str = ""
    attempts: int = 0
    seconds: float | None = None  # the validation call's latency
    depends_on: tuple[str, ...] = ()
    files: tuple[Mapping[str, Any], ...] = ()
    output: str = ""  # the start of the validation output, for the record
    environment: Mapping[str, str] = field(default_factory=dict)  # the workflow's environment keys, as written

    @property
    def sent(self) -> bool:
        """Its files reached the destination (exported and deployed)."""
        return bool(self.files) and not (self.state == FAILED and self.stage in (EXPORT, DEPLOY))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "stage": self.stage,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "depends_on": list(self.depends_on),
            "environment": dict(self.environment),
            "files": [dict(f) for f in self.files],
            "output": self.output,
        }


@dataclass(frozen=True)
class BenchmarkOutcome:
    name: str
    timeout: float
    repeat: int
    calls: tuple[CallRecord, ...] = ()
    not_run: str = ""  # why no call was made
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return bool(self.calls) and all(c.ok for c in self.calls)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timeout": self.timeout,
            "repeat": self.repeat,
            "passed": self.passed,
            "not_run": self.not_run,
            "notes": list(self.notes),
            "calls": [c.to_json() for c in self.calls],
        }


def prepare_algorithms(
    workflow: Workflow,
    cluster: Cluster,
    *,
    source: str,
    stores: Mapping[str, ObjectStore],
    sleep: Callable[[float], None] = time.sleep,
    limits: CodeLimits = DEFAULT_CODE_LIMITS,
    redact: Callable[[str], str] = lambda text: text,
) -> list[AlgorithmOutcome]:
    """Export, deploy and validate each algorithm in the workflow's order (dependencies first).

    `redact` scrubs the start of each validation's output before it is cut short for the record: a secret the
    destination echoed there would otherwise survive in part, past the scrubbing of what is written.
    """
    outcomes: dict[str, AlgorithmOutcome] = {}
    order = [a.name for a in workflow.algorithms]
    for algorithm in workflow.algorithms:
        outcome = _prepare_one(algorithm, workflow, cluster, source, stores, order, outcomes, sleep, limits, redact)
        # Recorded, not used: what an environment name means is the destination's business (none here uses it).
        outcomes[algorithm.name] = replace(outcome, environment=dict(algorithm.declared))
    return list(outcomes.values())


def _prepare_one(
    algorithm: Algorithm,
    workflow: Workflow,
    cluster: Cluster,
    source: str,
    stores: Mapping[str, ObjectStore],
    order: list[str],
    done: Mapping[str, AlgorithmOutcome],
    sleep: Callable[[float], None],
    limits: CodeLimits,
    redact: Callable[[str], str],
) -> AlgorithmOutcome:
    name = algorithm.name
    depends_on = tuple(algorithm.depends_on)
    files: tuple[Mapping[str, Any], ...] = ()
    if not workflow.run_only:
        try:
            exported = export_algorithm(algorithm, source, stores, cluster, limits=limits)
        except ExportError as exc:
            return AlgorithmOutcome(name, FAILED, EXPORT, str(exc), depends_on=depends_on)
        files = exported.receipts
        ours = sorted(c for c in exported.calls if c in order)
        later = [c for c in ours if order.index(c) > order.index(name)]
        if later:
            error = f"its code calls {', '.join(later)}, listed after it: list dependencies first"
            return AlgorithmOutcome(name, FAILED, EXPORT, error, depends_on=depends_on, files=files)
        depends_on = tuple(dict.fromkeys([*depends_on, *ours]))
        try:
            cluster.deploy(name, exported.files)
        except ClusterError as exc:
            return AlgorithmOutcome(name, FAILED, DEPLOY, str(exc), depends_on=depends_on, files=files)
    broken = [d for d in depends_on if done[d].state != VALIDATED]
    if broken:
        error = f"not validated: depends on {', '.join(broken)}, which did not validate"
        return AlgorithmOutcome(name, SKIPPED, VALIDATE, error, depends_on=depends_on, files=files)
    payload = rewrite_value(algorithm.test_payload, name, cluster, data_files_of(name, algorithm.data_files))
    result, attempts = _call_with_retries(cluster, name, payload, algorithm.timeout, sleep)
    if not result.ok:
        return AlgorithmOutcome(
            name, FAILED, VALIDATE, result.error, attempts, result.seconds, depends_on=depends_on, files=files
        )
    preview = redact(json.dumps(result.output, default=str))[:_PREVIEW_CHARS]
    return AlgorithmOutcome(name, VALIDATED, "", "", attempts, result.seconds, depends_on, files, preview)


def _call_with_retries(
    cluster: Cluster, name: str, payload: Any, timeout: float, sleep: Callable[[float], None]
) -> tuple[CallResult, int]:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        result = cluster.call(name, payload, timeout)
        if result.ok or not result.retryable or attempt == MAX_ATTEMPTS:
            return result, attempt
        sleep(RETRY_DELAY * attempt)
    raise AssertionError("unreachable")  # the loop returns on its last attempt


def run_benchmark(
    workflow: Workflow, cluster: Cluster, algorithms: Sequence[AlgorithmOutcome]
) -> list[BenchmarkOutcome]:
    """Each test in order against the entrypoint, `repeat` times, every call's latency and outcome kept.

    A test whose call timed out is not repeated: it has failed already, and each further try would cost its whole
    timeout again (up to 3000 s).
    """
    entrypoint = workflow.entrypoint
    states = {a.name: a for a in algorithms}
    if entrypoint is None:
        return []
    if states[entrypoint].state != VALIDATED:
        why = f"the entrypoint {entrypoint} did not validate ({states[entrypoint].state} at {states[entrypoint].stage})"
        return [BenchmarkOutcome(t.name, t.timeout, t.repeat, not_run=why) for t in workflow.tests]
    outcomes = []
    files = data_files_of(entrypoint, workflow.algorithm(entrypoint).data_files)
    for test in workflow.tests:
        payload = rewrite_value(test.payload, entrypoint, cluster, files)
        calls: list[CallRecord] = []
        notes: list[str] = []
        for _ in range(test.repeat):
            result = cluster.call(entrypoint, payload, test.timeout)
            calls.append(CallRecord(result.ok, result.seconds, result.error, result.timed_out))
            if result.timed_out:
                if len(calls) < test.repeat:
                    notes.append(f"stopped after a timeout: {test.repeat - len(calls)} repeat(s) not made")
                break
        outcomes.append(BenchmarkOutcome(test.name, test.timeout, test.repeat, tuple(calls), notes=tuple(notes)))
    return outcomes
