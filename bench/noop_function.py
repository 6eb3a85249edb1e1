"""A CloudEvent function that does nothing: what functions-framework's own serving costs per event (gunicorn's
thread hand-off, Flask, the CloudEvent parse), measured beside Relay so that its share of Relay's time is known."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent


@functions_framework.cloud_event  # type: ignore[untyped-decorator]
def noop(cloud_event: CloudEvent) -> None:
    del cloud_event  # answered 200 by the framework, like every event Relay handles
