"""Validation retries are bounded, a timed-out test is not repeated, and dependencies decide what is skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.steps.ratchet.clusters import CallResult, ExportedFile
from pipelines.steps.ratchet.stages import MAX_ATTEMPTS, prepare_algorithms, run_benchmark
from pipelines.steps.ratchet.workflow import Algorithm, BenchmarkTest, Workflow


class ScriptedCluster:
    """Answers each algorithm's calls from a script, in order (the last answer repeats)."""

    kind = "scripted"

    def __init__(self, script: dict[str, list[CallResult]]) -> None:
        self.script = script
        self.calls: list[tuple[str, Any, float]] = []

    def data_name(self, collection: str, path: str) -> str:
        return f"data://here/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return f"algo://here/{name}"

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        raise AssertionError("run_only workflows deploy nothing")

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        self.calls.append((name, payload, timeout))
        answers = self.script[name]
        return answers.pop(0) if len(answers) > 1 else answers[0]


def workflow(*algorithms: Algorithm, tests: tuple[BenchmarkTest, ...] = ()) -> Workflow:
    return Workflow(name="w", algorithms=algorithms, entrypoint=algorithms[-1].name, tests=tests, run_only=True)


def algo(name: str, *depends_on: str) -> Algorithm:
    return Algorithm(name, None, (), "python3", {"file": "data://.my/<algo>/x"}, depends_on=depends_on, timeout=7)


OK = CallResult(ok=True, output="fine", seconds=0.01)
NOT_YET = CallResult(ok=False, error="503: building version hash", retryable=True)
NO = CallResult(ok=False, error="400: bad input")


def test_a_not_yet_answer_is_retried_a_bounded_number_of_times():
    slept: list[float] = []
    cluster = ScriptedCluster({"a": [NOT_YET, OK], "b": [NOT_YET], "c": [NO]})
    outcomes = prepare_algorithms(
        workflow(algo("a"), algo("b"), algo("c")), cluster, source="", stores={}, sleep=slept.append
    )
    assert [(o.name, o.state, o.attempts) for o in outcomes] == [
        ("a", "validated", 2),
        ("b", "failed", MAX_ATTEMPTS),
        ("c", "failed", 1),  # "no" is not retried
    ]
    assert outcomes[1].error == "503: building version hash" and slept == [1.0, 1.0, 2.0]
    assert cluster.calls[0] == ("a", {"file": "data://here/a/x"}, 7)  # the test payload, in the destination's names


def test_what_depends_on_a_failure_is_skipped_and_the_rest_runs():
    cluster = ScriptedCluster({"a": [NO], "b": [OK], "c": [OK]})
    outcomes = prepare_algorithms(workflow(algo("a"), algo("b"), algo("c", "a")), cluster, source="", stores={})
    assert [(o.name, o.state) for o in outcomes] == [("a", "failed"), ("b", "validated"), ("c", "skipped")]
    assert [name for name, _, _ in cluster.calls] == ["a", "b"]
    tests = run_benchmark(
        workflow(algo("a"), algo("b"), algo("c", "a"), tests=(BenchmarkTest("t", 1),)), cluster, outcomes
    )
    assert tests[0].calls == () and tests[0].not_run == "the entrypoint c did not validate (skipped at validate)"


def test_tests_repeat_and_a_timeout_stops_the_repeats():
    timed_out = CallResult(ok=False, error="timed out after 1 s", seconds=1.0, timed_out=True)
    cluster = ScriptedCluster({"e": [OK, OK, OK, OK, timed_out]})  # validation, 3 x fast, slow
    tests = (BenchmarkTest("fast", "x", timeout=2, repeat=3), BenchmarkTest("slow", "y", timeout=1, repeat=5))
    flow = workflow(algo("e"), tests=tests)
    outcomes = prepare_algorithms(flow, cluster, source="", stores={})
    fast, slow = run_benchmark(flow, cluster, outcomes)
    assert fast.passed and [c.seconds for c in fast.calls] == [0.01, 0.01, 0.01]
    assert not slow.passed and len(slow.calls) == 1 and slow.calls[0].timed_out
    assert slow.notes == ("stopped after a timeout: 4 repeat(s) not made",)
