"""Throwaway functions-framework targets for the devstack tests: each CloudEvent becomes a JSON line in a file.

The targets carry Relay's entry-point names so that a LocalStack can run this file or functions/main.py alike.
An event whose data mentions FAIL_ONCE fails (500) on its first delivery, to exercise redelivery.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import functions_framework

EVENTS_FILE_ENV = "ECHO_EVENTS_FILE"
FAIL_ONCE = "fail-once"

_lock = threading.Lock()
_failed_ids: set[str] = set()


def _record(target: str, event: Any) -> None:
    attributes = dict(event.get_attributes())
    data = event.data
    if isinstance(data, bytes):
        data = data.decode()
    with _lock:
        # gunicorn runs several threads in one worker: the check-and-add must be atomic.
        fail = FAIL_ONCE in json.dumps(data) and attributes["id"] not in _failed_ids
        if fail:
            _failed_ids.add(attributes["id"])
        line = json.dumps({"target": target, "status": 500 if fail else 200, "attributes": attributes, "data": data})
        with open(os.environ[EVENTS_FILE_ENV], "a", encoding="utf-8") as out:
            out.write(line + "\n")
    if fail:
        raise RuntimeError(f"echo: failing the first delivery of {attributes['id']} on purpose")


@functions_framework.cloud_event
def on_object_finalized(event: Any) -> None:
    _record("on_object_finalized", event)


@functions_framework.cloud_event
def on_message_published(event: Any) -> None:
    _record("on_message_published", event)


@functions_framework.cloud_event
def on_run_ended(event: Any) -> None:
    _record("on_run_ended", event)
