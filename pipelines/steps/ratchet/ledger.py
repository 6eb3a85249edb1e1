"""The ratchet's files under the results location: `ratchet/<workflow>/<destination>/{baseline.json,history.jsonl,...}`.

Every read-modify-write carries a generation precondition, so two runs of the same workflow on the same
destination cannot both move the bar (or drop each other's history line): the loser reads again and decides again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.steps.ratchet.baseline import Baseline, BaselineError, Decision, baseline_to_json, parse_baseline
from relay.errors import BlobNotFoundError, PreconditionFailedError, RelayError
from relay.naming import join
from relay.ports import BlobStore

# A run loses a race only to another run's successful write, and each run writes once: with this many attempts,
# up to MAX_CONFLICTS + 1 concurrent runs of one workflow on one destination all get through.
MAX_CONFLICTS = 10


class LedgerError(Exception):
    """The results location could not be read or written, or kept losing races."""


@dataclass(frozen=True)
class Paths:
    folder: str

    @property
    def baseline(self) -> str:
        return join(self.folder, "baseline.json")

    @property
    def history(self) -> str:
        return join(self.folder, "history.jsonl")

    @property
    def report_json(self) -> str:
        return join(self.folder, "report.json")

    @property
    def report_html(self) -> str:
        return join(self.folder, "report.html")


def ledger_paths(results_uri: str, workflow: str, destination: str, tenant: str = "") -> Paths:
    """Where a workflow's bar on a destination lives; each tenant has its own, so no tenant can move another's."""
    return Paths(join(results_uri, "ratchet", *([tenant] if tenant else []), workflow, destination))


class Ledger:
    def __init__(self, store: BlobStore, paths: Paths, redact: Callable[[str], str] = lambda text: text) -> None:
        self._store = store
        self.paths = paths
        self._redact = redact  # whatever a destination echoed back must not carry a secret into a file

    def ratchet(
        self,
        decide: Callable[[Baseline], Decision],
        describe: Callable[[Baseline], Mapping[str, Any]],
        *,
        replace_malformed: bool = False,
    ) -> tuple[Baseline, Decision]:
        """Decide against the stored baseline and store the new one; returns (the baseline decided on, decision).

        Args:
            decide: the pure decision, called again if another run wrote the baseline meanwhile.
            describe: the new baseline as the JSON document to store.
            replace_malformed: a reset may replace a baseline this code cannot read; anything else refuses to.
        """
        for _ in range(MAX_CONFLICTS + 1):  # losing MAX_CONFLICTS times leaves one more try
            stored, generation = self._read_baseline(replace_malformed)
            decision = decide(stored)
            try:
                self._write(self.paths.baseline, _json(describe(decision.baseline)), generation)
            except PreconditionFailedError:
                continue  # another run moved the bar since we read it: decide again against its bar
            return stored, decision
        raise LedgerError(f"{self.paths.baseline}: lost {MAX_CONFLICTS + 1} races to concurrent runs; not stored")

    def append_history(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Append one line; returns every entry, oldest first (lines this code cannot read are left out)."""
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
        for _ in range(MAX_CONFLICTS + 1):  # losing MAX_CONFLICTS times leaves one more try
            data, generation = self._read(self.paths.history)
            try:
                self._write(self.paths.history, data + line.encode(), generation)
            except PreconditionFailedError:
                continue
            return _entries(data + line.encode())
        raise LedgerError(f"{self.paths.history}: lost {MAX_CONFLICTS + 1} races to concurrent runs; not appended")

    def write_reports(self, report: Mapping[str, Any], html: str) -> None:
        self._write(self.paths.report_json, _json(report), None)
        self._write(self.paths.report_html, html.encode(), None)

    def _read_baseline(self, replace_malformed: bool) -> tuple[Baseline, int]:
        data, generation = self._read(self.paths.baseline)
        if not data:
            return Baseline(), generation
        try:
            return parse_baseline(json.loads(data)), generation
        except (ValueError, BaselineError) as exc:
            if replace_malformed:
                return Baseline(), generation
            raise LedgerError(
                f"{self.paths.baseline}: not a baseline this code reads ({exc}); reset_baseline with a reason "
                "replaces it"
            ) from exc

    def _read(self, uri: str) -> tuple[bytes, int]:
        try:
            blob = self._store.read(uri)
        except BlobNotFoundError:
            return b"", 0  # generation 0: create only if still absent
        except RelayError as exc:
            raise LedgerError(f"{uri}: cannot read: {exc}") from exc
        return blob.data, blob.generation

    def _write(self, uri: str, data: bytes, generation: int | None) -> None:
        try:
            self._store.write(uri, self._redact(data.decode()).encode(), if_generation_match=generation)
        except PreconditionFailedError:
            raise
        except RelayError as exc:
            raise LedgerError(f"{uri}: cannot write: {exc}") from exc


def describe_baseline(
    workflow: str, destination: str, run_key: str, at: str
) -> Callable[[Baseline], Mapping[str, Any]]:
    return lambda baseline: baseline_to_json(
        baseline, workflow=workflow, destination=destination, run_key=run_key, at=at
    )


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"


def _entries(data: bytes) -> list[dict[str, Any]]:
    entries = []
    for line in data.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
