"""A ratchet report with a realistic history, made by the real ratchet, and headless Chromium to look at it."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import struct
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.ratchet.baseline import Baseline, Call, Measurement, decide_ratchet
from pipelines.steps.ratchet.report import history_entry, render_html, report_document
from pipelines.steps.ratchet.stages import AlgorithmOutcome, BenchmarkOutcome, CallRecord

START = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
SLACK = 0.25  # the example workflow's slack
# Per test: its median per run (None: every call failed; absent: the test did not exist yet), over eight runs.
MEDIANS: dict[str, Sequence[float | None]] = {
    # Slack-dominated: 55 % over a 190 ms bar is still ok, the limit being 190 ms x 1.1 + 250 ms.
    "short text": (0.200, 0.210, 0.190, 0.198, 0.205, 0.192, 0.240, 0.295),
    "document": (1.20, 1.18, 1.25, 1.15, 1.17, 1.16, 1.19, 1.21),
    # Milliseconds: the slack puts its limit far above the chart, so it is marked at the top edge.
    "ping": (0.012, 0.011, 0.0115, 0.012, 0.0108, 0.011, 0.0112, 0.0111),
    # Passed, then broke: violated (failed-that-passed-before) in the last runs.
    "summary of a long report": (0.80, 0.82, 0.79, 0.81, 0.80, 0.78, None, None),
    "never passed": (None,) * 8,  # failed every time: no bar, no limit, only crosses
}
ADDED_LATE = {"cold start": (0.52, 0.55)}  # first run without a limit, then one run with one
RUN_KEYS = [f"ratchet-{n:02d}-5f0c2a9be41d7733c6a8e1f09b2d4c57a1e3f6b8" for n in range(8)]


def realistic_report(runs: int = len(RUN_KEYS)) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """report.json and history of the last of `runs` (eight: over six days), each decided by the real ratchet."""
    baseline, history = Baseline(), []
    tables = {**MEDIANS, **{name: (None,) * 6 + tuple(values) for name, values in ADDED_LATE.items()}}
    report: dict[str, Any] = {}
    for run, run_key in enumerate(RUN_KEYS[:runs]):
        at = (START + timedelta(hours=18 * run + 3 * (run % 3))).isoformat(timespec="milliseconds")
        at = at.replace("+00:00", "Z")
        tests, measured = [], []
        for name, values in tables.items():
            median = values[run]
            if median is None and name in ADDED_LATE:
                continue
            calls = (
                tuple(CallRecord(True, median * f) for f in (0.97, 1.0, 1.04))
                if median is not None
                else (CallRecord(False, 30.0, "TimeoutError: no answer in 30 s from algo://local/summarize"),) * 3
            )
            tests.append(BenchmarkOutcome(name, timeout=30.0, repeat=3, calls=calls))
            measured.append(Measurement(name, tuple(Call(c.ok, c.seconds) for c in calls), 0.10, SLACK))
        decision = decide_ratchet(baseline, measured, run_key=run_key, at=at)
        baseline = decision.baseline
        algorithms = _algorithms(failing=run >= 6)
        status = 409 if decision.failed else 200
        history.append(
            history_entry(
                run_key=run_key, at=at, status=status, tolerance=0.10, reset_reason=None,
                algorithms=algorithms, tests=tests, decision=decision,
            )
        )  # fmt: skip
        report = report_document(
            workflow="text-summary", destination={"kind": "local", "name": "local"}, run_key=run_key, at=at,
            status=status, message=f"ratchet text-summary on local: {len(decision.failed)} test(s) failed",
            parameters={"tolerance": 0.10}, algorithms=algorithms, tests=tests, runs=measured, decision=decision,
            links={},
        )  # fmt: skip
    return report, history


def _algorithms(*, failing: bool) -> list[AlgorithmOutcome]:
    names = ("tokenize", "count_words", "first_sentence", "summarize_with_a_rather_long_algorithm_name")
    outcomes = [AlgorithmOutcome(n, "validated", attempts=1, seconds=0.05, files=({"name": f"{n}.py"},)) for n in names]
    if failing:
        error = "ModuleNotFoundError: No module named 'summarizer_models_v2_experimental_with_a_long_name'"
        outcomes[-1] = AlgorithmOutcome(names[-1], "failed", stage="validate", error=error, attempts=3, seconds=None)
    return outcomes


def realistic_html(folder: Path, runs: int = len(RUN_KEYS)) -> Path:
    report, history = realistic_report(runs)
    path = folder / "report.html"
    path.write_text(render_html(report, history))
    return path


def chromium() -> str:
    """The Chromium binary; a skip without one, a failure where CI asks for it (RELAY_REQUIRE_BROWSER=1)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (apt-get install -y chromium): the report is not checked in a browser"
    if os.environ.get("RELAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RELAY_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


ANSWER_SECONDS = 60  # not a measurement: how long a stuck browser may hold the suite before the test says so


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): the page laid out
    at an exact width (the command line's --window-size has a floor of 500 px), measured, and photographed."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_chromium, self._commands = os.pipe()
        self._answers, from_chromium = os.pipe()

        def as_fds_3_and_4() -> None:  # the protocol's fixed descriptors: commands on 3, answers on 4
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        self._log = profile / "chromium.log"  # its own output, quoted when it stops answering
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=as_fds_3_and_4, pass_fds=(3, 4),
            )  # fmt: skip
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next = 0
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        except BaseException:
            self._process.kill()
            self._close()
            raise

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next:
                assert "error" not in answer, f"{method}: {answer['error']}"
                result: dict[str, Any] = answer["result"]
                return result

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], ANSWER_SECONDS)
            chunk = os.read(self._answers, 1 << 16) if ready else b""
            assert chunk, f"chromium did not answer: {self._log.read_text(errors='replace')[-2000:]}"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def open(self, page: Path, width: int) -> None:
        """`page` laid out as on a phone or a desktop `width` CSS pixels wide, at one device pixel per CSS pixel."""
        session = self._session
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=800, deviceScaleFactor=1,
                  mobile=width < 600)  # fmt: skip
        self.send("Page.enable", session)
        self.send("Page.navigate", session, url=page.as_uri())
        while self._read().get("method") != "Page.loadEventFired":
            pass

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", self._session, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"]["value"]

    def screenshot(self, png: Path) -> tuple[int, int]:
        """The whole page as a PNG; its width and height in pixels, read from the PNG's header."""
        shot = self.send("Page.captureScreenshot", self._session, format="png", captureBeyondViewport=True)
        png.write_bytes(base64.b64decode(shot["data"]))
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{png} is no PNG"
        size: tuple[int, int] = struct.unpack(">II", header[16:24])
        return size

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            self._close()

    def _close(self) -> None:
        os.close(self._commands)
        os.close(self._answers)
        self._process.wait(timeout=ANSWER_SECONDS)


# What the test asks of the page after layout: the scroll width, each legend item's drawn elements, chart text.
MEASURE = """(() => {
  const figures = [...document.querySelectorAll("figure")].map((figure) => {
    const svg = figure.querySelector("svg"), chart = svg.getBoundingClientRect();
    return {
      runs: svg.querySelectorAll("circle, path.nolatency").length,
      legend: [...figure.querySelectorAll("ul.legend li")].map((item) => {
        const swatch = getComputedStyle(item.querySelector(".swatch"));
        const drawn = [...figure.querySelectorAll("svg ." + item.dataset.item)].map((e) => {
          const r = e.getBoundingClientRect(), style = getComputedStyle(e);
          return {w: r.width, h: r.height, visible: style.visibility !== "hidden" && style.display !== "none",
                  inside: r.right > chart.left && r.left < chart.right && r.bottom > chart.top && r.top < chart.bottom,
                  colour: style.stroke !== "none" ? style.stroke : style.fill};
        });
        return {item: item.dataset.item, swatch: item.querySelector(".line") ? swatch.borderTopColor : swatch.color,
                drawn};
      }),
      text: [...figure.querySelectorAll("svg text")].map((t) => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, date: t.classList.contains("date"), left: r.left, right: r.right,
                size: parseFloat(getComputedStyle(t).fontSize) * chart.width / svg.viewBox.baseVal.width};
      }),
    };
  });
  return {scroll_width: document.documentElement.scrollWidth, client_width: document.documentElement.clientWidth,
          scrolled: [...document.querySelectorAll(".scroll")].map((e) => e.scrollWidth - e.clientWidth), figures};
})()"""
