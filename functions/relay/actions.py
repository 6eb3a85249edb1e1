"""Actions on the trigger topic: a message whose `action` attribute asks to cancel or rerun a run, read as
on_message_published reads it (relay.lifecycle does what it asks). Apart from the lifecycle so that a Pub/Sub
function's cold start, which asks this of every message, need not load it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.events import EventInfo

ACTIONS = ("cancel", "rerun")


@dataclass(frozen=True)
class ActionRequest:
    """A message on the trigger topic that asks for an action on a run instead of carrying a trigger."""

    event: EventInfo
    topic: str
    message_id: str
    action: str
    run_key: str
    force: bool = False

    @property
    def uri(self) -> str:
        return f"{self.topic}#{self.message_id}"


def action_request(event: EventInfo, topic: str, message: Mapping[str, Any]) -> ActionRequest | str | None:
    """The action a message asks for (attributes `action` and `run_key`, `force=true` for a rerun), why it is
    malformed, or None for a message without an `action` attribute (a trigger)."""
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping) or "action" not in attributes:
        return None
    action, key = attributes.get("action"), attributes.get("run_key")
    if action not in ACTIONS:
        return f"expected attribute action: one of {', '.join(ACTIONS)}, found {action!r}"
    if not isinstance(key, str) or not key:
        return "expected attribute run_key: the run to act on, found none"
    message_id = message.get("messageId") or message.get("message_id") or event.id
    force = str(attributes.get("force", "")).lower() == "true"
    return ActionRequest(event, topic, str(message_id), str(action), key, force)
