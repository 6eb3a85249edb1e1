"""The functions' outcome lines (relay.logs: one JSON line per event), read back: from a local stack's log files, or
from Cloud Logging with the caller's credentials (relaycli.cloud_logging, as `relay logs` reads a job's lines)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from relay.adapters.http import HttpClient
from relaycli import cloud_logging

MAX_LINES = 5000  # from Cloud Logging: the newest this many matching lines, never the whole log


def outcome_lines(log_path: Path) -> list[dict[str, Any]]:
    """Every line of the log that is one event's outcome (it carries an `outcome` field)."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return [entry for entry in (parse_line(line) for line in lines) if entry is not None and "outcome" in entry]


def parse_line(line: str) -> dict[str, Any] | None:
    """One JSON log line as a mapping; None for anything else (functions-framework's own text lines)."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def from_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The outcome lines of each file, or of each `*.log` in a folder (a local stack's working folder)."""
    found: list[dict[str, Any]] = []
    for path in paths:
        for log in sorted(path.glob("*.log")) if path.is_dir() else [path]:
            found += outcome_lines(log)
    return found


def cloud_filter(run_keys: Iterable[str], uris: Iterable[str], ids: Iterable[str]) -> str:
    """The Cloud Logging filter for the functions' outcome lines about these run keys, trigger URIs or event ids."""
    terms = [f"jsonPayload.run_key={_quoted(key)}" for key in sorted(set(run_keys))]
    terms += [f"jsonPayload.trigger_uri={_quoted(uri)}" for uri in sorted(set(uris))]
    terms += [f"jsonPayload.event_id={_quoted(one)}" for one in sorted(set(ids))]
    return f"jsonPayload.outcome:* AND ({' OR '.join(terms)})"


def from_cloud_logging(
    env: Mapping[str, str], project: str, run_keys: Iterable[str], uris: Iterable[str], ids: Iterable[str]
) -> list[dict[str, Any]]:
    """The matching outcome lines in `project`, each as the function wrote it with Cloud Logging's timestamp.
    LinesUnavailableError when none can be read (no credentials, refused)."""
    http = HttpClient()
    where = cloud_logging.endpoint(env)
    source = cloud_logging.tokens(env, http)
    query = cloud_filter(run_keys, uris, ids)
    return list(_payloads(cloud_logging.entries(http, where, source, project, query, newest_first=True)))


def _payloads(entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for count, entry in enumerate(entries):
        if count >= MAX_LINES:
            return
        payload = entry.get("jsonPayload")
        if isinstance(payload, dict) and "outcome" in payload:
            yield {**payload, "time": payload.get("time") or entry.get("timestamp"), "severity": entry.get("severity")}


def matching(
    lines: Iterable[Mapping[str, Any]], run_keys: Iterable[str], uris: Iterable[str], ids: Iterable[str]
) -> list[Mapping[str, Any]]:
    """The lines about any of these run keys, trigger URIs (a message's `topic#id` among them) or event ids."""
    keys, where, events = set(run_keys), set(uris), set(ids)
    return [
        line
        for line in lines
        if line.get("run_key") in keys
        or line.get("trigger_uri") in where
        or line.get("event_id") in events
        or str(line.get("trigger_uri") or "").rpartition("#")[2] in events
    ]


def _quoted(text: str) -> str:
    return json.dumps(text)
