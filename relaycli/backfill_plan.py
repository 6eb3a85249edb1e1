"""What `relay backfill` delivers: the objects a tenant's trigger locations or routes cover, each as the message the
deployment would have received for it, with the run key the functions give that message.

Every decision is the functions' own, imported from relay.service and relay.policy and taken in the order of
`service.handle_delivery`: a trigger file goes as a `trigger_uri` naming its generation on the topic of the tenant
whose trigger location holds it (the tenant its storage event speaks for), a routed data object as a storage
notification on a topic `notifications` wires to its bucket. Both name the object version, so the functions key
the run by bucket, name and generation (naming.object_identity) exactly as for the lost event; a delivery the
functions would refuse is never made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from relay import naming, routes, set_store
from relay import policy as rules
from relay.errors import InvalidTriggerError, Problem
from relay.events import PUBSUB_PUBLISHED, EventInfo, Message, ObjectDelivery
from relay.service import (
    own_object,
    parse_document,
    refuse_message,
    route_for,
    route_run_key,
    run_key_for,
    set_place,
    skip_run_key,
    tenant_for,
)
from relay.triggers import MAX_TRIGGER_BYTES, Trigger

TRIGGER_URI, NOTIFICATION = "trigger-uri", "storage-notification"
# What a set route's object a set holds already is recorded as: it has no record of its own (its run is its set's),
# so a delivery would only find it in its set again, or, once the set launched, start the folder's next one.
COLLECTED = "collected"
_EVENT = EventInfo(id="backfill", type=PUBSUB_PUBLISHED, source="relay backfill", time=None)


@dataclass(frozen=True)
class Cover:
    """How one object is delivered: by which message, on which topic, for which tenant (and route)."""

    via: str  # TRIGGER_URI or NOTIFICATION
    topic: str
    tenant: rules.Tenant | None
    route: routes.Route | None = None

    @property
    def what(self) -> str:
        if self.route is not None and self.tenant is not None:
            return f"route {self.tenant.name}/{self.route.id}"
        return f"trigger file of {self.tenant.name}" if self.tenant else "trigger file"


@dataclass(frozen=True)
class Listed:
    """An object version as the store lists and stats it."""

    bucket: str
    name: str
    generation: int
    size: int
    updated: datetime | None = None

    @property
    def uri(self) -> str:
        return naming.object_uri(self.bucket, self.name)


@dataclass(frozen=True)
class Candidate:
    listed: Listed
    cover: Cover

    @property
    def delivery(self) -> ObjectDelivery:
        """The delivery the functions make of this candidate's message."""
        return _delivery(self.listed.bucket, self.listed.name, self.listed.generation, self.cover)


@dataclass(frozen=True)
class Planned:
    """A candidate, its run key, and what records it: the state of that key's record, or COLLECTED for a set route's
    object a set holds (None: nothing, so it is delivered)."""

    candidate: Candidate
    run_key: str
    recorded: str | None


def _delivery(bucket: str, name: str, generation: int | None, cover: Cover) -> ObjectDelivery:
    origin = Message(cover.topic, "backfill")
    return ObjectDelivery(_EVENT, bucket, name, generation, None, cover.via, origin)


def covers(
    policy: rules.Policy,
    bucket: str,
    name: str,
    *,
    tenant: str | None = None,
    topic: str = "",
    own: tuple[str, str] = ("", ""),
) -> list[Cover]:
    """The deliveries that would reach gs://bucket/name as its own event did, for `tenant` only when named; none
    for Relay's own objects (`own`: the results and catalog locations), which the functions never record. Without
    a policy every object is a trigger file, delivered on `topic` (the deployment's trigger topic)."""
    uri = naming.object_uri(bucket, name)
    if own_object(*own, uri):
        return []
    if not policy.source:
        return [Cover(TRIGGER_URI, topic, None)]
    routed = list(_routed(policy, bucket, name))
    if routed:  # a routed object lies under no trigger location (the policy forbids the overlap)
        return [cover for cover in routed if tenant is None or (cover.tenant and cover.tenant.name == tenant)]
    owner = rules.tenant_for_object(policy, uri)  # the tenant the object's storage event speaks for
    if owner is None or not owner.topics or (tenant is not None and owner.name != tenant):
        return []
    cover = Cover(TRIGGER_URI, owner.topics[0], owner)
    delivery = _delivery(bucket, name, None, cover)
    if tenant_for(policy, delivery) != owner or refuse_message(policy, delivery, owner) is not None:
        return []
    if rules.refuse_object(policy, owner, uri) is not None:
        return []
    return [cover]


def _routed(policy: rules.Policy, bucket: str, name: str) -> Iterator[Cover]:
    """A storage notification on each topic wired to the bucket whose tenant has a route taking the object."""
    for wired in policy.notifications:
        if bucket not in wired.buckets:
            continue
        probe = _delivery(bucket, name, None, Cover(NOTIFICATION, wired.topic, None))
        owner = tenant_for(policy, probe)
        if owner is None or refuse_message(policy, probe, owner) is not None:
            continue
        route = route_for(probe, owner)
        if route is not None:
            yield Cover(NOTIFICATION, wired.topic, owner, route)


def since(listed: Listed, moment: datetime | None) -> bool:
    """Whether the object changed at `moment` or later (any, without one); one with no known time cannot be shown to
    have."""
    return moment is None or (listed.updated is not None and listed.updated >= moment)


def run_key(candidate: Candidate, read: Callable[[str, int], bytes]) -> str:
    """The run key the functions give the candidate's delivery, as the storage event would have had it: a route's
    from the object version; a trigger file's from its document (read at the listed generation by `read`) and that
    version; the skip key for a file that is no trigger or is empty."""
    listed, cover, delivery = candidate.listed, candidate.cover, candidate.delivery
    if cover.route is not None:
        return route_run_key(cover.route, delivery)
    if delivery.format is None or listed.size == 0:
        return skip_run_key(delivery, listed.generation)
    parsed: Trigger | InvalidTriggerError
    if listed.size > MAX_TRIGGER_BYTES:  # the functions read no further: an invalid trigger, keyed as one
        problem = Problem("(document)", f"at most {MAX_TRIGGER_BYTES} bytes", f"{listed.size} bytes")
        parsed = InvalidTriggerError(listed.uri, [problem], code="too_large")
    else:
        parsed = parse_document(read(listed.uri, listed.generation), delivery.format, listed.uri)
    identity = naming.object_identity(listed.bucket, listed.name, listed.generation)
    return run_key_for(parsed, identity, cover.tenant)


def set_member(candidate: Candidate) -> tuple[set_store.Group, set_store.Member] | None:
    """The sets the functions collect the candidate in, and the member it is there (relay.service.set_place); None
    unless a set route covers it."""
    listed, cover = candidate.listed, candidate.cover
    if cover.route is None or cover.route.set_rule is None or cover.tenant is None:
        return None
    return set_place(cover.tenant, cover.route, listed.bucket, listed.name, listed.generation)


def plan(keyed: Iterable[tuple[Candidate, str]], recorded: Callable[[Candidate, str], str | None]) -> Iterator[Planned]:
    """Each candidate with the state of what records it (`recorded`: its run key's record, or COLLECTED); a key met
    before is delivered once (the functions would find the first delivery's record)."""
    seen: set[str] = set()
    for candidate, key in keyed:
        state = "duplicate" if key in seen else recorded(candidate, key)
        seen.add(key)
        yield Planned(candidate, key, state)


def message(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
    """The body and attributes of the message the deployment would have received for the candidate."""
    listed = candidate.listed
    if candidate.cover.via == TRIGGER_URI:
        return b"", {"trigger_uri": f"{listed.uri}#{listed.generation}"}
    attributes = {
        "payloadFormat": "JSON_API_V1",
        "eventType": "OBJECT_FINALIZE",
        "bucketId": listed.bucket,
        "objectId": listed.name,
        "objectGeneration": str(listed.generation),
    }
    body = {
        "kind": "storage#object",
        "bucket": listed.bucket,
        "name": listed.name,
        "generation": str(listed.generation),
        "size": str(listed.size),
    }
    return json.dumps(body).encode(), attributes
