"""The launch use-case: one delivery in, one outcome out, with every port passed in."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from relay import labels as label_rules
from relay import naming, queue, records, routes
from relay import policy as rules
from relay import policy_caps as caps
from relay import trace as tracing
from relay.catalog import Catalog, PipelineDefinition, check_parameters, run_parameters
from relay.chain_checks import check_chain
from relay.config import Settings
from relay.errors import (
    BackendBusyError,
    BackendPausedError,
    BlobNotFoundError,
    BlobRequestError,
    ClaimHeldError,
    InvalidTriggerError,
    LaunchRejectedError,
    PermanentError,
    PolicyDeniedError,
    PreconditionFailedError,
    Problem,
    SubmitUncertainError,
    TransientError,
)
from relay.events import Delivery, EventInfo, InlineDelivery, ObjectDelivery, Skip
from relay.outcome import Outcome
from relay.ports import BlobInfo, BlobStore, LaunchedRun, LaunchRequest, Notifier, PipelineBackend
from relay.results import publish_record
from relay.single_flight import SingleFlight
from relay.triggers import MAX_TRIGGER_BYTES, Format, Trigger, parse_trigger

if TYPE_CHECKING:
    from relay import set_store
    from relay.sets import SetRule

# A submit must start this long before the claim's lease ends (at most a quarter of the lease), so that it is
# over before anyone may take over.
SUBMIT_MARGIN = timedelta(seconds=60)
# How long to hold submits back after a refusal for load that named no time, and the most any answer may ask.
DEFAULT_PAUSE = 1.0
MAX_PAUSE = 60.0
# After a refusal for load, submits go one at a time for this long: a burst of redeliveries would otherwise all
# reach the backend the moment a pause ends, and all but the first few be refused again.
CAREFUL_FOR = 30.0
# Why a zero-byte object is skipped, not rejected: no run, only a skip record (`relay trigger` and `validate` say so).
EMPTY_OBJECT = "zero-byte object: an upload in progress or a placeholder"
NOT_A_TRIGGER_FILE = "not a trigger file: the name does not end in .json, .yaml or .yml"
NO_ROUTE = "a data object no route takes: its bucket is routed, and no trigger location holds it"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def submit_margin(claim_lease: float) -> float:
    """Seconds before the lease ends by which a submit must have started (and so the most it may take)."""
    return min(SUBMIT_MARGIN.total_seconds(), claim_lease / 4)


class SubmitGate:
    """An instance's backpressure: after the backend refuses for load (BackendBusyError), no backend call starts
    until the time it asked for, then one at a time for a while; a delivery meanwhile is answered for redelivery."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # held for bookkeeping only, never across a backend call
        self._idle = threading.Condition(self._lock)  # notified as each call ends
        self._paused_until = 0.0
        self._careful_until = 0.0
        self._in_flight = 0

    def closed(self) -> str | None:
        """Why a backend call may not start now, or None."""
        with self._lock:
            return self._closed(self._clock())

    def _closed(self, now: float) -> str | None:
        if now < self._paused_until:
            return f"the backend asked for a pause: {self._paused_until - now:.1f} s left"
        if now < self._careful_until and self._in_flight:
            return "the backend refused for load lately: one call at a time, and one is under way"
        return None

    def reopens_in(self) -> float:
        """Seconds until the backend's pause ends (0: not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def wary(self) -> bool:
        """Whether the backend refused for load lately (a pause, or the careful while after it): runs it refused may
        wait in the queue, so a launch that went through should drain it."""
        with self._lock:
            return self._clock() < self._careful_until

    @contextlib.contextmanager
    def calling(self, *, queue_up: bool = False) -> Iterator[None]:
        """Around backend calls: BackendPausedError when closed; a BackendBusyError raised inside pauses it.
        `queue_up`: while calls go one at a time, wait for the one under way rather than refuse (a drain that
        waited out the backend's wait holds a claimed run: its turn comes, or the pause a refusal sets)."""
        with self._lock:
            while queue_up and self._in_flight and self._paused_until <= self._clock() < self._careful_until:
                self._idle.wait()
            reason = self._closed(self._clock())
            if reason:
                raise BackendPausedError(f"not calling the backend: {reason}")
            self._in_flight += 1
        try:
            yield
        except BackendBusyError as busy:
            pause = min(MAX_PAUSE, DEFAULT_PAUSE if busy.retry_after is None else busy.retry_after)
            with self._lock:
                now = self._clock()
                self._paused_until = max(self._paused_until, now + pause)
                self._careful_until = max(self._careful_until, now + pause + CAREFUL_FOR)
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()


@dataclass(frozen=True)
class Relay:
    """The ports and settings one function instance works with."""

    settings: Settings
    store: BlobStore
    catalog: Catalog
    backend: PipelineBackend
    notifier: Notifier | None = None
    clock: Callable[[], datetime] = field(default=_utcnow)
    policy: rules.Policy = rules.NO_POLICY
    gate: SubmitGate = field(default_factory=SubmitGate)
    pauses: queue.PauseView = field(default_factory=queue.PauseView)
    sleep: Callable[[float], None] = time.sleep  # a drain waiting out the backend's wait (tests: the clock moves)
    ending: SingleFlight = field(default_factory=SingleFlight)  # the drains runs' ends ask for, one per tenant

    @functools.cached_property  # once per instance: resolving local paths stats the disk
    def policy_context(self) -> rules.Context:
        """What the policy needs to know of this deployment: the backend, and Relay's own storage."""
        settings = self.settings
        own = (settings.results_uri, settings.catalog_uri, settings.policy_uri)
        return rules.Context(local=settings.backend == "local", protected=rules.own_locations(*own))


@dataclass(frozen=True)
class _Loaded:
    """A trigger document's bytes, the identity that makes its run key, or why it cannot be read."""

    raw: bytes
    format: Format
    identity: str
    reference: dict[str, Any]
    error: InvalidTriggerError | None = None


Source = ObjectDelivery | InlineDelivery


def handle_delivery(relay: Relay, delivery: Delivery) -> Outcome:
    """Validate, claim and launch; permanent problems become records, transient ones raise."""
    if isinstance(delivery, Skip):
        severity = "ERROR" if delivery.malformed else "WARNING" if delivery.authored else None
        return Outcome("skipped", delivery.reason, delivery.event.id, delivery.uri, severity_override=severity)
    tenant = tenant_for(relay.policy, delivery)
    # An object a message names (a trigger_uri, a storage notification): its topic decides, and nothing of the
    # object is read before the topic's tenant may have it.
    named = delivery if isinstance(delivery, ObjectDelivery) and delivery.via != "storage-event" else None
    if named is not None:
        refusal = refuse_message(relay.policy, named, tenant)
        if refusal is not None:
            return _refuse_origin(relay, named, refusal)
        # Before the skips: a routed data object is no trigger file and lies under no tenant's trigger prefix (the
        # policy forbids the overlap); only the topic's tenant's own routes can take it.
        route = route_for(named, tenant)
        if route is not None and tenant is not None:
            return _handle_route(relay, named, tenant, route)
        if unrouted_data(relay.policy, named, tenant):
            return _skip(relay, named, tenant, NO_ROUTE, records.SKIP_NOT_A_TRIGGER, generation=named.generation)
    skipped = _skip_reason(relay, delivery)
    if skipped is not None and isinstance(delivery, ObjectDelivery):
        return _skip(relay, delivery, tenant, *skipped, generation=delivery.generation)
    if named is not None:
        refusal = rules.refuse_object(relay.policy, tenant, named.uri)
    else:
        refusal = rules.refuse_origin(relay.policy, tenant, delivery.uri)
    if refusal is not None:
        return _refuse_origin(relay, delivery, refusal)
    stale = _is_stale(relay, delivery)
    if isinstance(delivery, ObjectDelivery) and (older := _older_generation(relay, delivery, None, None)):
        return older
    try:
        loaded = _load(relay, delivery)
    except TransientError:
        if not stale or not isinstance(delivery, ObjectDelivery):
            raise
        loaded = _unreadable(delivery)  # the trigger cannot be read, and retrying has gone on long enough
    if isinstance(loaded, _Empty):
        return _skip(relay, loaded.delivery, tenant, EMPTY_OBJECT, records.SKIP_EMPTY, generation=loaded.generation)
    parsed = loaded.error or parse_document(loaded.raw, loaded.format, delivery.uri)
    pipeline = parsed.pipeline if isinstance(parsed, Trigger) else None
    run_key = run_key_for(parsed, loaded.identity, tenant)
    if stale:
        existing = _read_record(relay.store, naming.launch_record(relay.settings.results_uri, run_key))
        if existing is None:
            return _drop_stale(relay, delivery, loaded, run_key, pipeline)
        if existing.get("state") != records.LAUNCHING:
            return _duplicate(delivery, run_key, existing)
        # A claim made while the event was fresh is seen through: takeover, and the backend is asked first.
    if isinstance(parsed, InvalidTriggerError):
        return _reject(relay, delivery, loaded, run_key, pipeline, parsed)
    trigger = parsed
    try:
        definition = check_trigger(relay.catalog, trigger, delivery.uri)
        check_policy(relay, tenant, trigger, delivery.uri)
        check_chain(relay.catalog, relay.policy, tenant, trigger, delivery.uri)
    except InvalidTriggerError as invalid:
        return _reject(relay, delivery, loaded, run_key, trigger.pipeline, invalid)
    if named is not None and not stale and (dropped := _dropped_as_stale(relay, named, run_key, trigger.pipeline)):
        return dropped
    place = _supersede(relay, delivery, loaded, run_key, trigger.pipeline, tenant)
    if isinstance(place, Outcome):
        return place
    return _claim_and_launch(relay, delivery, loaded, run_key, trigger, definition, tenant, place=place)


def refuse_message(
    policy: rules.Policy, delivery: ObjectDelivery, tenant: rules.Tenant | None
) -> PolicyDeniedError | None:
    """Why a message may not name this object at all: a topic no tenant owns, or a storage notification on a topic
    the deployment did not wire to the object's bucket (anyone who may publish there could have written it)."""
    topic = delivery.origin.topic if delivery.origin else ""
    refusal = rules.refuse_topic(policy, tenant, topic, delivery.uri)
    if refusal is None and delivery.via == "storage-notification":
        refusal = rules.refuse_notification(policy, topic, delivery.bucket, delivery.uri)
    return refusal


def _skip_reason(relay: Relay, delivery: Source) -> tuple[str, str | None] | None:
    """Why an object is no trigger, and the code its skip is recorded with (None: Relay's own, never recorded)."""
    if not isinstance(delivery, ObjectDelivery):
        return None
    own = _own_object(relay, delivery.uri)
    if own:  # first: a record, report or catalog entry of Relay's own is never looked at further
        return own, None
    if delivery.format is None:
        return NOT_A_TRIGGER_FILE, records.SKIP_NOT_A_TRIGGER
    if delivery.size == 0:
        return EMPTY_OBJECT, records.SKIP_EMPTY
    return None


def records_skip(policy: rules.Policy, delivery: ObjectDelivery, tenant: rules.Tenant | None, *, routed: bool) -> bool:
    """Whether a skipped object gets a record: only one a tenant meant for Relay, so that `relay runs` answers "why
    did my file not run?" without listing a data bucket's thousands of objects that are no one's trigger. That is
    an object a route of the tenant takes, or one under the tenant's trigger locations (without a policy, any: the
    deployment wires only its trigger bucket and topic). Relay's own objects are never recorded (_skip_reason)."""
    if routed or not policy.source:
        return True
    # A tenant's trigger locations hold its objects whichever way they came (refuse_object: None when under one).
    return tenant is not None and rules.refuse_object(policy, tenant, delivery.uri) is None


def skip_run_key(delivery: ObjectDelivery, generation: int | None) -> str:
    """The key a skipped object is recorded under: the one an unreadable trigger of that object version gets
    (`trigger-<digest>`), so one version has one skip record however often it is delivered; for a message naming no
    version, its message's (Relay learns no generation without a read it does not need)."""
    if generation is None and delivery.origin is not None:
        return origin_run_key(delivery.origin.identity)
    return origin_run_key(naming.object_identity(delivery.bucket, delivery.name, generation or 0))


def _skip(
    relay: Relay,
    delivery: ObjectDelivery,
    tenant: rules.Tenant | None,
    reason: str,
    code: str | None,
    *,
    generation: int | None,
    routed: tuple[str, str] | None = None,
) -> Outcome:
    """Logged always; recorded once (one create-only write: a redelivery writes nothing new) when records_skip says
    so, under `routed`'s run key and pipeline for an object a route took. Not published to the notify topic: a skip
    is no run, and that would be a second round trip."""
    if code is None or not records_skip(relay.policy, delivery, tenant, routed=routed is not None):
        return Outcome("skipped", reason, delivery.event.id, delivery.uri)
    run_key, pipeline = routed or (skip_run_key(delivery, generation), None)
    record = records.skip_record(
        run_key=run_key,
        tenant=tenant.name if tenant else "",
        pipeline=pipeline,
        trigger=records.trigger_reference(delivery, generation),
        code=code,
        message=f"{delivery.uri}: skipped: {reason}",
        now=relay.clock(),
    )
    with contextlib.suppress(PreconditionFailedError):  # recorded by an earlier delivery of the same object version
        relay.store.write(
            naming.skip_record(relay.settings.results_uri, run_key), records.encode(record), if_generation_match=0
        )
    return Outcome("skipped", reason, delivery.event.id, delivery.uri, run_key, None, pipeline)


def _own_object(relay: Relay, uri: str) -> str | None:
    return own_object(relay.settings.results_uri, relay.settings.catalog_uri, uri)


def own_object(results_uri: str, catalog_uri: str, uri: str) -> str | None:
    """Why `uri` is Relay's own, never a trigger (even where it shares the trigger bucket or a routed one); None
    when it is not."""
    for own, what in ((results_uri, "a Relay record"), (catalog_uri, "a catalog entry")):
        if uri.startswith(own.rstrip("/") + "/"):
            return f"{what} under {own}, not a trigger"
    return None


def unrouted_data(policy: rules.Policy, delivery: ObjectDelivery, tenant: rules.Tenant | None) -> bool:
    """A notification from one of the tenant's routed (data) buckets, of an object none of its routes takes and none
    of its trigger locations holds: a data file that is no one's trigger, skipped (a `.json` result file among the
    data too), never rejected as a trigger it was not meant to be."""
    return (
        tenant is not None
        and delivery.via == "storage-notification"
        and any(route.bucket == delivery.bucket for route in tenant.routes)
        and rules.refuse_object(policy, tenant, delivery.uri) is not None
    )


def route_for(delivery: ObjectDelivery, tenant: rules.Tenant | None) -> routes.Route | None:
    """The route a delivery is for: only a storage notification, which names a finalized object, and only a route
    of the tenant whose topic it came on (that topic wired to the object's bucket: see refuse_message)."""
    if delivery.via != "storage-notification" or tenant is None:
        return None
    return rules.route_of(tenant, delivery.bucket, delivery.name)


def object_event(info: BlobInfo, delivery: ObjectDelivery) -> routes.ObjectEvent:
    """The object as the store has it at the notified generation: all a route's templates may use. Nothing comes
    from the notification's body or attributes, which their publisher chose."""
    return routes.ObjectEvent(
        bucket=delivery.bucket,
        name=delivery.name,
        generation=info.generation,
        size=info.size,
        content_type=info.content_type,
        metadata=info.metadata,
    )


def route_trigger(route: routes.Route, event: routes.ObjectEvent | routes.SetEvent) -> Trigger:
    """The trigger a route makes of an object; InvalidTriggerError naming each value the event lacks."""
    parameters, problems = routes.render(route.parameters, event)
    if problems:
        raise InvalidTriggerError(event.uri, problems, code="invalid_parameters")
    return Trigger(pipeline=route.pipeline, parameters=parameters, chain=route.chain)


def route_run_key(route: routes.Route, event: routes.ObjectEvent | ObjectDelivery) -> str:
    """The run key of a routed object: as for a trigger file, `<pipeline>-<digest of bucket, name, generation>`."""
    return naming.derive_run_key(
        route.pipeline, naming.object_identity(event.bucket, event.name, event.generation or 0)
    )


def _handle_route(relay: Relay, delivery: ObjectDelivery, tenant: rules.Tenant, route: routes.Route) -> Outcome:
    """A data object a route takes: the run is made from the object's facts as the store has them at the notified
    generation (one stat); its bytes are never read."""
    own = _own_object(relay, delivery.uri)
    if own:
        return _skip(relay, delivery, tenant, own, None, generation=delivery.generation)
    if route.set_rule is not None:
        return _collect(relay, delivery, tenant, route, route.set_rule)
    identity = naming.object_identity(delivery.bucket, delivery.name, delivery.generation or 0)
    reference = {**records.trigger_reference(delivery, delivery.generation), "route": f"{tenant.name}/{route.id}"}
    loaded = _Loaded(b"", "json", identity, reference)
    run_key = route_run_key(route, delivery)  # known before the object is looked at
    stale = _is_stale(relay, delivery)
    if stale:
        existing = _read_record(relay.store, naming.launch_record(relay.settings.results_uri, run_key))
        if existing is None:
            return _drop_stale(relay, delivery, loaded, run_key, route.pipeline)
        if existing.get("state") != records.LAUNCHING:
            return _duplicate(delivery, run_key, existing)
    if older := _older_generation(relay, delivery, run_key, route.pipeline):
        return older
    try:
        if delivery.generation is None:  # without it, two uploads of one name would share a run key
            problem = Problem("(event)", "the object's generation (objectGeneration)", "none in the notification")
            raise InvalidTriggerError(delivery.uri, [problem], code="invalid_trigger")
        if not stale and (dropped := _dropped_as_stale(relay, delivery, run_key, route.pipeline)):
            return dropped
        info = _routed_object(relay, delivery, delivery.generation)
        if info.size == 0:
            routed = (run_key, route.pipeline)
            return _skip(
                relay, delivery, tenant, EMPTY_OBJECT, records.SKIP_EMPTY, generation=info.generation, routed=routed
            )
        trigger = route_trigger(route, object_event(info, delivery))
        definition = check_trigger(relay.catalog, trigger, delivery.uri)
        check_policy(relay, tenant, trigger, delivery.uri)
        check_chain(relay.catalog, relay.policy, tenant, trigger, delivery.uri)
    except InvalidTriggerError as invalid:
        return _reject(relay, delivery, loaded, run_key, route.pipeline, invalid)
    place = _supersede(relay, delivery, loaded, run_key, route.pipeline, tenant)
    if isinstance(place, Outcome):
        return place
    return _claim_and_launch(relay, delivery, loaded, run_key, trigger, definition, tenant, place=place)


def set_place(
    tenant: rules.Tenant, route: routes.Route, bucket: str, name: str, generation: int
) -> tuple[set_store.Group, set_store.Member]:
    """The sets an object version a set route takes is collected in (its folder's, of the route's tenant), and the
    member it joins them as (the marker, when its name is the route's)."""
    from relay import set_store  # here, not at the top: only sets need it, and a cold start need not load it
    from relay.sets import group_of

    group = set_store.Group(tenant.name, route.id, bucket, group_of(name))
    return group, set_store.Member(bucket, name, generation, route.is_marker(name))


def _collect(
    relay: Relay, delivery: ObjectDelivery, tenant: rules.Tenant, route: routes.Route, rule: SetRule
) -> Outcome:
    """An object a set route takes joins its folder's open set (relay.set_store); the set it completes launches
    now, through the caps and queue as any run. Until then the delivery is acknowledged as collected. A
    redelivery finds the set the object joined, and launches it if a crash came between its close and its launch."""
    from relay import set_store  # here, not at the top: only sets need it, and a cold start need not load it

    identity = naming.object_identity(delivery.bucket, delivery.name, delivery.generation or 0)
    reference = {**records.trigger_reference(delivery, delivery.generation), "route": f"{tenant.name}/{route.id}"}
    loaded = _Loaded(b"", "json", identity, reference)
    try:
        if delivery.generation is None:  # without it, two uploads of one name would be one member
            problem = Problem("(event)", "the object's generation (objectGeneration)", "none in the notification")
            raise InvalidTriggerError(delivery.uri, [problem], code="invalid_trigger")
        info = _routed_object(relay, delivery, delivery.generation)
    except InvalidTriggerError as invalid:
        return _reject(relay, delivery, loaded, route_run_key(route, delivery), route.pipeline, invalid)
    marker = route.is_marker(delivery.name)
    if info.size == 0 and not marker:  # a marker is empty as a rule; a data object that is empty is no data
        routed = (route_run_key(route, delivery), route.pipeline)
        return _skip(
            relay, delivery, tenant, EMPTY_OBJECT, records.SKIP_EMPTY, generation=info.generation, routed=routed
        )
    group, member = set_place(tenant, route, delivery.bucket, delivery.name, info.generation)
    results = relay.settings.results_uri
    if _is_stale(relay, delivery) and not set_store.is_member(relay.store, results, group, member):
        # Too old to join a set now; one that joined while fresh is seen through (its set may need launching).
        return _drop_stale(relay, delivery, loaded, route_run_key(route, delivery), route.pipeline)
    joining = [member]
    if marker and not set_store.is_member(relay.store, results, group, member):
        # A marker says "everything before me is there": the folder's objects whose notifications Pub/Sub has not
        # brought yet (it may bring them after the marker's) join its set first; their own deliveries find them in.
        joining = [*_not_yet_collected(relay, route, group, results), member]
    mine: Outcome | None = None
    for joiner in joining:
        for each in set_store.join(relay.store, results, group, rule, joiner, relay.clock()):
            outcome = launch_set(relay, each, delivery)
            if any(m.digest == member.digest for m in each.members):
                mine = outcome
    if mine is not None:
        return mine
    what = "marker" if marker else "object"
    message = f"collected: {what} of the open set of {group.set_id(0).rpartition('#')[0]} (route {route.id})"
    return Outcome("collected", message, delivery.event.id, delivery.uri, None, None, route.pipeline)


def _not_yet_collected(
    relay: Relay, route: routes.Route, group: set_store.Group, results: str
) -> list[set_store.Member]:
    """The objects in `group`'s folder that `route` takes (markers and empty objects aside) and no set holds yet."""
    from relay import set_store  # loaded by _collect already
    from relay.sets import group_of

    bucket = f"gs://{group.bucket}/"
    found = []
    for uri in relay.store.list(bucket + (f"{group.folder}/" if group.folder else "")):
        name = uri[len(bucket) :]
        if group_of(name) != group.folder or not route.matches(group.bucket, name) or route.is_marker(name):
            continue
        try:
            info = relay.store.stat(uri)
        except BlobNotFoundError:
            continue  # deleted since the listing
        member = set_store.Member(group.bucket, name, info.generation, False)
        if info.size and not set_store.is_member(relay.store, results, group, member):
            found.append(member)
    return found


def set_run_key(route: routes.Route, set_id: str) -> str:
    """The run key of a set: `<pipeline>-<digest of the set's id>` (tenant, route, folder and number: sets.set_id)."""
    return naming.derive_run_key(route.pipeline, set_id)


def launch_set(relay: Relay, closed: set_store.Closed, delivery: Source | None = None) -> Outcome:
    """Launch a closed set (its run key is the set's: exactly one run however often this is called), or record it
    incomplete; `delivery` is the one that closed it (None: the reconcile tick). The set is then done: the tick no
    longer looks at it. Transient errors raise, leaving it for the redelivery or the next tick."""
    from relay import set_store  # here, not at the top: only sets need it, and a cold start need not load it

    group, now = closed.group, relay.clock()
    tenant = relay.policy.tenant(group.tenant)
    route = next((r for r in tenant.routes if r.id == group.route), None) if tenant else None
    source = delivery or InlineDelivery(
        event=EventInfo(id=f"set-{closed.number}", type="relay.set", source="reconcile", time=now),
        topic="sets",
        message_id=closed.set_id,
        data=b"",
        format="json",
    )
    if tenant is None or route is None:  # the route left the policy while its set was open: nothing to launch
        set_store.done(relay.store, relay.settings.results_uri, closed)
        message = f"set {closed.set_id}: its route is no longer in the policy; not launched"
        return Outcome("skipped", message, source.event.id, source.uri, severity_override="WARNING")
    run_key = set_run_key(route, closed.set_id)
    reference = {
        **records.trigger_reference(source, None),
        "uri": f"gs://{group.bucket}/{group.folder}" + ("/" if group.folder else ""),
        "route": f"{tenant.name}/{route.id}",
        "set": closed.set_id,
        "set_reason": closed.reason,
        "set_objects": len(closed.objects),
        "via": "set",
    }
    loaded = _Loaded(b"", "json", closed.set_id, reference)
    if not closed.complete:
        outcome = _record_incomplete(relay, source, run_key, route.pipeline, tenant.name, reference, closed)
    else:
        event = routes.SetEvent(closed.set_id, group.bucket, group.folder, closed.objects, closed.marker)
        try:
            trigger = route_trigger(route, event)
            definition = check_trigger(relay.catalog, trigger, str(reference["uri"]))
            check_policy(relay, tenant, trigger, str(reference["uri"]))
        except InvalidTriggerError as invalid:
            outcome = _reject(relay, source, loaded, run_key, route.pipeline, invalid)
        else:
            try:
                outcome = _claim_and_launch(relay, source, loaded, run_key, trigger, definition, tenant)
            except ClaimHeldError as held:
                # Another delivery launches the set now. Not raised for a redelivery: the set stays open to the
                # tick, which takes the claim over if that delivery dies before its launch record.
                return Outcome("duplicate", str(held), source.event.id, source.uri, run_key, None, route.pipeline)
    set_store.done(relay.store, relay.settings.results_uri, closed)
    return outcome


def close_due_sets(relay: Relay) -> tuple[Outcome, ...]:
    """On the reconcile tick (nothing else wakes up for a quiet period or a deadline): close every open set whose
    quiet period or deadline passed, and launch it or record it incomplete; finish what a crash left between a
    set's close and its launch. One listing, then per open set one read, one stat and one listing."""
    from relay import set_store  # here, not at the top: only sets need it, and a cold start need not load it

    results, outcomes = relay.settings.results_uri, []
    for open_set in set_store.open_sets(relay.store, results):
        tenant = relay.policy.tenant(open_set.group.tenant)
        route = next((r for r in tenant.routes if r.id == open_set.group.route), None) if tenant else None
        if route is None or route.set_rule is None:
            continue  # a route the policy no longer has: its set waits for it (or an operator)
        for closed in set_store.close_due(relay.store, results, open_set, route.set_rule, relay.clock()):
            outcomes.append(launch_set(relay, closed))
    return tuple(outcomes)


def _record_incomplete(
    relay: Relay,
    source: Source,
    run_key: str,
    pipeline: str,
    tenant: str,
    reference: Mapping[str, Any],
    closed: set_store.Closed,
) -> Outcome:
    """A set its deadline closed before it was complete: recorded once (create-only) under its run key, so that
    `relay runs` and `relay status` show it, with its objects and why; published for whoever alerts on it."""
    record = records.incomplete_record(
        run_key=run_key,
        tenant=tenant,
        pipeline=pipeline,
        trigger=reference,
        closed=closed.as_record(),
        now=relay.clock(),
    )
    try:
        relay.store.write(
            naming.incomplete_record(relay.settings.results_uri, run_key), records.encode(record), if_generation_match=0
        )
    except PreconditionFailedError:
        pass  # recorded by a delivery or tick before this one
    else:
        publish_record(relay.notifier, record)
    return Outcome("incomplete", record["message"], source.event.id, source.uri, run_key, None, pipeline)


def _routed_object(relay: Relay, delivery: ObjectDelivery, generation: int) -> BlobInfo:
    """The routed object's facts at the notified generation; InvalidTriggerError when no such version exists."""
    try:
        return relay.store.stat(delivery.uri, generation=generation)
    except BlobNotFoundError:
        found = f"no object at generation {generation}"
        problem = Problem("(object)", "the notified object, at the generation the notification names", found)
    except BlobRequestError as refused:  # a bucket name or generation Cloud Storage cannot hold: no retry helps
        problem = Problem("(object)", "an object Cloud Storage can address", str(refused))
    raise InvalidTriggerError(delivery.uri, [problem], code="trigger_not_found")


@dataclass(frozen=True)
class _Empty:
    """An object found empty at this generation once stat'd (an inline document is never empty: it is the message)."""

    delivery: ObjectDelivery
    generation: int | None


def _load(relay: Relay, delivery: Source) -> _Loaded | _Empty:
    if isinstance(delivery, InlineDelivery):
        identity = delivery.identity
        return _Loaded(delivery.data, delivery.format, identity, records.trigger_reference(delivery, None))
    fmt = delivery.format or "json"
    generation, size = delivery.generation, delivery.size
    raw, error = b"", None
    try:
        if generation is None or size is None:  # a message's object: its size is the store's, never the message's
            info = relay.store.stat(delivery.uri, generation=generation)
            generation, size = info.generation, info.size
        if size == 0:
            return _Empty(delivery, generation)
        if size is not None and size > MAX_TRIGGER_BYTES:
            problem = Problem("(document)", f"at most {MAX_TRIGGER_BYTES} bytes", f"{size} bytes")
            error = InvalidTriggerError(delivery.uri, [problem], code="too_large")
        else:
            raw = relay.store.read(delivery.uri, generation=generation).data
    except BlobNotFoundError:
        found = f"no object at generation {generation}" if generation else "no object"
        problem = Problem("(object)", "the trigger object", found)
        error = InvalidTriggerError(delivery.uri, [problem], code="trigger_not_found")
    except BlobRequestError as refused:  # a bucket name or generation Cloud Storage cannot hold: no retry helps
        problem = Problem("(object)", "an object Cloud Storage can address", str(refused))
        error = InvalidTriggerError(delivery.uri, [problem], code="trigger_not_found")
    identity = naming.object_identity(delivery.bucket, delivery.name, generation or 0)
    return _Loaded(raw, fmt, identity, records.trigger_reference(delivery, generation), error)


def parse_document(raw: bytes, fmt: Format, uri: str) -> Trigger | InvalidTriggerError:
    """The trigger, or why it is not one."""
    try:
        return parse_trigger(raw, fmt, uri)
    except InvalidTriggerError as invalid:
        return invalid


def check_trigger(catalog: Catalog, trigger: Trigger, uri: str) -> PipelineDefinition:
    """The trigger's pipeline, once its parameters fit it; InvalidTriggerError naming every problem otherwise."""
    definition = catalog.get(trigger.pipeline, trigger_uri=uri)
    problems = check_parameters(definition, trigger.parameters)
    if problems:
        raise InvalidTriggerError(uri, problems, code="invalid_parameters")
    return definition


def check_policy(relay: Relay, tenant: rules.Tenant | None, trigger: Trigger, uri: str) -> None:
    """PolicyDeniedError naming everything the trigger uses beyond what its tenant may."""
    problems = rules.check_trigger(
        relay.policy,
        tenant,
        trigger.pipeline,
        trigger.parameters,
        trigger.run_key,
        relay.policy_context,
        priority=trigger.priority,
        retries=trigger.retries,
    )
    if problems:
        raise PolicyDeniedError(uri, problems)


def tenant_for(policy: rules.Policy, delivery: Source) -> rules.Tenant | None:
    """The tenant a delivery speaks for: from where it came, never from what it says or names. A bucket's own
    storage event speaks for the tenant whose trigger prefix holds the object; a message (inline, a trigger_uri, a
    storage notification) for the tenant of its topic, whatever object it names."""
    if isinstance(delivery, InlineDelivery):
        return rules.tenant_for_topic(policy, delivery.topic)
    if delivery.via == "storage-event":
        return rules.tenant_for_object(policy, delivery.uri)
    return rules.tenant_for_topic(policy, delivery.origin.topic) if delivery.origin else None


def run_key_for(parsed: Trigger | InvalidTriggerError, identity: str, tenant: rules.Tenant | None = None) -> str:
    """The trigger's own run_key in its tenant's namespace, else `<pipeline>-<digest of identity>`."""
    if isinstance(parsed, Trigger):
        if parsed.run_key:
            return rules.scoped_run_key(tenant, parsed.run_key)
        return naming.derive_run_key(parsed.pipeline, identity)
    return naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)


def origin_run_key(identity: str) -> str:
    """The run key of a delivery refused for where it came from: derived from the event, never one it names."""
    return naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)


def _refuse_origin(relay: Relay, delivery: Source, refusal: PolicyDeniedError) -> Outcome:
    """Refused unread: a message naming an object elsewhere must not make Relay read it into a record. A message's
    refusal is keyed by the message, so that it lands under no key the object's own delivery would use."""
    if isinstance(delivery, ObjectDelivery):
        loaded = _unreadable(delivery)
        if delivery.origin is not None:
            loaded = replace(loaded, identity=delivery.origin.identity)
    else:
        identity = delivery.identity
        loaded = _Loaded(b"", delivery.format, identity, records.trigger_reference(delivery, None))
    return _reject(relay, delivery, loaded, origin_run_key(loaded.identity), None, refusal)


def _unreadable(delivery: ObjectDelivery) -> _Loaded:
    identity = naming.object_identity(delivery.bucket, delivery.name, delivery.generation or 0)
    return _Loaded(b"", delivery.format or "json", identity, records.trigger_reference(delivery, delivery.generation))


def _is_stale(relay: Relay, delivery: Source) -> bool:
    sent = delivery.event.time
    return sent is not None and (relay.clock() - sent).total_seconds() > relay.settings.max_event_age


def _dropped_as_stale(relay: Relay, delivery: Source, run_key: str, pipeline: str | None) -> Outcome | None:
    """A stale event stays stale: a message announcing again an object whose key was dropped as stale is dropped
    too. One read, for announced objects only: a bucket's own event cannot come again fresh for the same version,
    so the launch path of trigger files pays nothing for this."""
    recorded = _read_record(relay.store, naming.rejection_record(relay.settings.results_uri, run_key)) or {}
    error, trigger = recorded.get("error"), recorded.get("trigger")
    if not isinstance(error, Mapping) or error.get("code") != "stale_event":
        return None
    event = trigger.get("event_id") if isinstance(trigger, Mapping) else None
    message = f"{delivery.uri}: run key {run_key} was dropped as stale (event {event}); a stale event stays stale"
    return Outcome("dropped", message, delivery.event.id, delivery.uri, run_key, None, pipeline, code="stale_event")


def _supersede(
    relay: Relay, delivery: Source, loaded: _Loaded, run_key: str, pipeline: str, tenant: rules.Tenant | None
) -> Outcome | str | None:
    """Under a cap that says `at_cap: supersede`, an object's newer generation stops the older one's run and
    takes its queue place (returned; None: none); an older generation after a newer one is dropped as a stale
    event is (relay.supersede). Costs nothing elsewhere: the caps are the policy's, already read."""
    generation = loaded.reference.get("generation")
    if not isinstance(delivery, ObjectDelivery) or not isinstance(generation, int):
        return None
    if not caps.superseding(caps.cap_scopes(relay.policy, tenant.name if tenant else "", pipeline)):
        return None
    from relay import supersede  # here, not at the top: only `at_cap: supersede` needs it, not a cold start

    results = relay.settings.results_uri
    standing = supersede.take(relay.store, results, delivery.bucket, delivery.name, generation, run_key)
    if standing.newer:
        return _drop_superseded(relay, delivery, loaded, run_key, pipeline, generation, standing.newer)
    if not standing.replaced:
        return None
    lease = relay.settings.claim_lease
    place = supersede.stop(
        relay.store, relay.backend, relay.notifier, results, standing.replaced, run_key, relay.clock, lease
    )
    supersede.settle(relay.store, results, delivery.bucket, delivery.name, generation)
    return queue.taken_place(place, run_key) if place else None


def _older_generation(
    relay: Relay, delivery: ObjectDelivery, run_key: str | None, pipeline: str | None
) -> Outcome | None:
    """An object's generation arriving after a newer one's run took its place (at_cap: supersede), dropped before
    the object is read: a stale event stays stale (the older version may be gone by now). One read, only where
    the policy supersedes at all. Without a `run_key` (a trigger file, unread) it is keyed as an unread trigger."""
    generation = delivery.generation
    if generation is None or not caps.supersedes_anywhere(relay.policy):
        return None
    from relay import supersede  # here, not at the top: only `at_cap: supersede` needs it, not a cold start

    results = relay.settings.results_uri
    newer = supersede.newer_than(relay.store, results, delivery.bucket, delivery.name, generation)
    if not newer:
        return None
    loaded = _unreadable(delivery)
    return _drop_superseded(
        relay, delivery, loaded, run_key or origin_run_key(loaded.identity), pipeline, generation, newer
    )


def _drop_superseded(
    relay: Relay,
    delivery: ObjectDelivery,
    loaded: _Loaded,
    run_key: str,
    pipeline: str | None,
    generation: int,
    newer: str,
) -> Outcome:
    """Dropped, as a stale event is, and recorded once: the run `newer` of a newer generation stands."""
    from relay import supersede  # loaded by the caller already

    existing = _read_record(relay.store, naming.launch_record(relay.settings.results_uri, run_key))
    if existing is not None:
        return _duplicate(delivery, run_key, existing)
    problem = Problem("(object)", "the object's newest generation, or one after it", f"generation {generation}")
    refusal = InvalidTriggerError(
        f"{delivery.uri}: run {newer} of a newer generation stands", [problem], code=supersede.SUPERSEDED
    )
    return replace(_reject(relay, delivery, loaded, run_key, pipeline, refusal), outcome="dropped")


def _drop_stale(relay: Relay, delivery: Source, loaded: _Loaded, run_key: str, pipeline: str | None) -> Outcome:
    sent = delivery.event.time
    age = (relay.clock() - sent).total_seconds() if sent else 0.0
    problem = Problem("(event)", f"an event at most {relay.settings.max_event_age:.0f} s old", f"{age:.0f} s old")
    outcome = _reject(
        relay, delivery, loaded, run_key, pipeline, InvalidTriggerError(delivery.uri, [problem], code="stale_event")
    )
    return replace(outcome, outcome="dropped")


def _reject(
    relay: Relay, delivery: Source, loaded: _Loaded, run_key: str, pipeline: str | None, error: PermanentError
) -> Outcome:
    """Record the rejection once (duplicates find it) and publish it."""
    uri = naming.rejection_record(relay.settings.results_uri, run_key)
    outcome = Outcome("rejected", str(error), delivery.event.id, delivery.uri, run_key, None, pipeline, code=error.code)
    if _read_record(relay.store, uri) is not None:
        return outcome
    owner = tenant_for(relay.policy, delivery)  # from where it came, as for a run: whose board shows it
    record = records.rejection_record(
        run_key=run_key,
        pipeline=pipeline,
        trigger=loaded.reference,
        error=error,
        now=relay.clock(),
        tenant=owner.name if owner else "",
    )
    publish_record(relay.notifier, record)
    with contextlib.suppress(PreconditionFailedError):  # a concurrent duplicate recorded the same rejection
        relay.store.write(uri, records.encode(record), if_generation_match=0)
    return outcome


def _claim_and_launch(
    relay: Relay,
    delivery: Source,
    loaded: _Loaded,
    run_key: str,
    trigger: Trigger,
    pipeline: PipelineDefinition,
    tenant: rules.Tenant | None,
    *,
    place: str | None = None,
) -> Outcome:
    """Claim the run key create-only and launch, or queue the run (at `place`, when it takes one over)."""
    settings = relay.settings
    uri = naming.launch_record(settings.results_uri, run_key)
    tenant_name = tenant.name if tenant else ""
    parameters = run_parameters(
        pipeline, trigger.parameters, run_key=run_key, results_uri=settings.results_uri, tenant=tenant_name
    )
    # Encoded once: the bytes written, and (decoded) the claim as a re-read of them shows it.
    encoded = records.encode(
        records.claim_record(
            run_key=run_key,
            pipeline=pipeline.name,
            backend=relay.backend.name,
            trigger=loaded.reference,
            parameters=parameters,
            labels=trigger.labels,
            now=relay.clock(),
            lease_seconds=settings.claim_lease,
            tenant=tenant_name,
            retries=trigger.retries,
            chain=[step.as_record() for step in trigger.chain],
        )
    )
    claim = records.decode(encoded)
    waiting = _why_wait(relay, tenant_name, pipeline.name, delivery.uri)
    if isinstance(waiting, InvalidTriggerError):
        return _reject(relay, delivery, loaded, run_key, pipeline.name, waiting)
    if waiting and (queued := _enqueue(relay, delivery, uri, claim, waiting, trigger.priority, place)) is not None:
        return queued
    previous: dict[str, Any] | None = None
    try:
        generation = relay.store.write(uri, encoded, if_generation_match=0)
    except PreconditionFailedError:
        try:
            existing = relay.store.read(uri)
        except BlobNotFoundError:
            raise ClaimHeldError(f"{uri}: a claim on {run_key} was just released; retry") from None
        current = records.decode(existing.data)
        if current == claim:
            # Our own create-only write, retried by the client after its first reply was lost.
            generation = existing.generation
        elif current.get("state") != records.LAUNCHING:
            return _duplicate(delivery, run_key, current)
        elif not records.lease_expired(current, relay.clock()):
            raise ClaimHeldError(
                f"{uri}: run key {run_key} is being launched by event {current['trigger'].get('event_id')} "
                f"until {current.get('lease_expires_at')}; retry later"
            ) from None
        else:
            try:
                generation = relay.store.write(uri, encoded, if_generation_match=existing.generation)
            except PreconditionFailedError:
                raise ClaimHeldError(f"{uri}: another delivery took over run key {run_key} first") from None
            previous = current
    claimed = _Claimed(uri, claim, generation, previous, from_queue=False)
    return _submit_claimed(relay, delivery, loaded, claimed, pipeline, trigger)


def _why_wait(relay: Relay, tenant: str, pipeline: str, uri: str) -> str | InvalidTriggerError | None:
    """Why a run must wait in the queue rather than launch now (None: it need not); or the rejection of a trigger
    past a cap whose policy says reject. Costs one listing (the pauses, at most one per queue.PAUSE_VIEW_SECONDS),
    and one per rejecting cap."""
    closed = relay.gate.closed()
    if closed:
        return f"the {relay.backend.name} backend refused for load lately: {closed}"
    results = relay.settings.results_uri
    paused = caps.paused_by(relay.pauses.get(relay.store, results), tenant, pipeline)
    if paused:
        return paused
    scopes = caps.cap_scopes(relay.policy, tenant, pipeline)
    for scope in caps.rejecting(scopes):
        why = queue.full(relay.store, results, scope, relay.clock())
        if why:
            found = caps.describe(scope, rate=why == "rate")
            expected = f"room under {scope.where} (at_cap: reject)"
            return InvalidTriggerError(uri, [Problem("(limits)", expected, found)], code="limit_exceeded")
    if scopes:
        # Through the queue even when there is room, so that no newcomer overtakes a run already waiting.
        return "waiting for room under " + ", ".join(scope.where for scope in scopes)
    return None


def _enqueue(
    relay: Relay,
    delivery: Source,
    uri: str,
    claim: Mapping[str, Any],
    reason: str,
    priority: int,
    taken: str | None = None,
) -> Outcome | None:
    """Record the run `queued` (create-only, so a redelivery finds it) and give it its place (`taken`, one it takes
    over); None for a run key a claim holds already (its lease and takeover settle it, as for any claim)."""
    now = relay.clock()
    run_key, results = str(claim["run_key"]), relay.settings.results_uri
    place = taken or queue.place_for(now, run_key, priority)
    record = records.queued_record({**claim, "priority": priority}, place=place, reason=reason, now=now)
    try:
        relay.store.write(uri, records.encode(record), if_generation_match=0)
    except PreconditionFailedError:
        existing = _read_record(relay.store, uri)
        if existing is None:
            raise ClaimHeldError(f"{uri}: a claim on {run_key} was just released; retry") from None
        if existing.get("state") == records.LAUNCHING:
            return None
        if existing.get("state") == records.QUEUED:  # a crash may have come between the record and its place
            queue.add_entry(relay.store, results, str(existing.get("tenant") or ""), str(existing.get("place")))
        return _duplicate(delivery, run_key, existing)
    publish_record(relay.notifier, record)
    queue.add_entry(relay.store, results, str(claim.get("tenant") or ""), record["place"])
    return _queued(delivery, record)


def _queued(delivery: Source, record: Mapping[str, Any]) -> Outcome:
    message = f"queued {record['pipeline']}: {record['waiting_for']}"
    run_key, pipeline, tenant = record["run_key"], record["pipeline"], record.get("tenant") or None
    return Outcome("queued", message, delivery.event.id, delivery.uri, run_key, None, pipeline, tenant=tenant)


@dataclass(frozen=True)
class _Claimed:
    """A claim written: where, as written, its generation, the expired claim it took over (if it did), whether it
    came from the queue (a failed submit puts it back there rather than asking for a redelivery), and what to wait
    for between the claim and the submit (a drain's readiness for the backend's wait to end; BackendPausedError
    puts the run back)."""

    uri: str
    claim: dict[str, Any]
    generation: int
    previous: dict[str, Any] | None
    from_queue: bool
    ready: Callable[[], None] | None = None


def _submit_claimed(
    relay: Relay, delivery: Source, loaded: _Loaded, claimed: _Claimed, pipeline: PipelineDefinition, trigger: Trigger
) -> Outcome:
    uri, claim, generation, previous = claimed.uri, claimed.claim, claimed.generation, claimed.previous
    run_key, parameters = str(claim["run_key"]), claim["parameters"]
    try:
        if claimed.ready is not None:
            claimed.ready()
        with relay.gate.calling(queue_up=claimed.ready is not None):
            # A takeover first asks the backend: the crashed holder may have submitted before it could record.
            found = relay.backend.find_run(run_key) if previous is not None else None
            run = found or _submit(relay, claim, pipeline, parameters, trigger, str(claim.get("tenant") or ""))
    except LaunchRejectedError as refused:
        try:
            relay.store.delete(uri, if_generation_match=generation)
        except PreconditionFailedError:
            # Our lease ran out and a takeover owns the key now: its record, not our refusal, says what happened.
            raise ClaimHeldError(
                f"{uri}: run key {run_key} was taken over while its submit was refused; retry"
            ) from None
        queue.release(relay.store, queue.held_by(claim))
        return _reject(relay, delivery, loaded, run_key, pipeline.name, refused)
    except SubmitUncertainError:
        raise  # the run may exist: the lease runs out first, then a takeover asks the backend
    except TransientError as error:
        # Surely not submitted (a refusal for load, a pause, no connection).
        if isinstance(error, BackendBusyError | BackendPausedError) and (previous is None or claimed.from_queue):
            # Acknowledged: the queue drains at the backend's pace.
            return _requeue(relay, delivery, claimed, error, trigger.priority)
        if claimed.from_queue:
            _requeue(relay, delivery, claimed, error, trigger.priority)
        else:
            _release_claim(relay, uri, generation, claim, taken_over=previous is not None)
        raise
    # The run found belongs to the claim that submitted it, with that claim's trigger and parameters.
    launched = records.launched_record(
        previous if found and previous else claim, run_id=run.run_id, run_url=run.url, now=relay.clock()
    )
    if previous is not None:  # whose claim this one took over, and whether its run was there: for `relay why`
        event = (previous.get("trigger") or {}).get("event_id")
        launched["takeover"] = {"from_event": event, "claimed_at": previous.get("claimed_at"), "found": bool(found)}
    try:
        publish_record(relay.notifier, launched)
        relay.store.write(uri, records.encode(launched), if_generation_match=generation)
    except TransientError:
        _expire_claim(relay.store, uri, generation, claim, relay.clock())  # the run exists: a takeover finds it
        raise
    except PreconditionFailedError:
        # Only a takeover after our lease ran out rewrites the record; it asked the backend after we submitted.
        pass
    message = f"launched {pipeline.name} as run {run.run_id}" + (" (after takeover)" if previous else "")
    tenant = str(claim.get("tenant") or "") or None
    return Outcome(
        "launched", message, delivery.event.id, delivery.uri, run_key, run.run_id, pipeline.name, tenant=tenant
    )


def _requeue(relay: Relay, delivery: Source, claimed: _Claimed, error: TransientError, priority: int) -> Outcome:
    """Put a claim whose submit surely sent nothing back in the queue, at its old place if it had one, and give
    its slots back; after a refusal for load, hold every instance's drain off for as long as the backend asked."""
    now, claim, results = relay.clock(), claimed.claim, relay.settings.results_uri
    run_key = str(claim["run_key"])
    place = str(claim.get("place") or queue.place_for(now, run_key, priority))
    reason = f"the {relay.backend.name} backend refused for load: {' '.join(str(error).split())[:200]}"
    record = records.queued_record({**claim, "priority": priority}, place=place, reason=reason, now=now)
    try:
        relay.store.write(claimed.uri, records.encode(record), if_generation_match=claimed.generation)
    except PreconditionFailedError:
        raise ClaimHeldError(f"{claimed.uri}: {run_key} was taken over while its submit was refused") from None
    queue.release(relay.store, queue.held_by(claim))
    queue.add_entry(relay.store, results, str(claim.get("tenant") or ""), place)
    if isinstance(error, BackendBusyError):
        wait = min(MAX_PAUSE, DEFAULT_PAUSE if error.retry_after is None else error.retry_after)
        queue.hold(relay.store, queue.hold_uri(results, relay.backend.name), now + timedelta(seconds=wait), reason)
    publish_record(relay.notifier, record)
    return _queued(delivery, record)


def launch_queued(
    relay: Relay,
    record: Mapping[str, Any],
    generation: int,
    slots: Sequence[queue.Held],
    ready: Callable[[], None] | None = None,
) -> Outcome:
    """Launch a run the queue holds, with the `slots` the drain took for it: claim it from its queued record (or
    take over a claim whose lease ran out, keeping that claim's slots), generation-matched, so that of drainers at
    once one launches it; the others get a "duplicate" and give their slots back. Then `ready` (the claim is held
    meanwhile; BackendPausedError from it puts the run back at its place), and the launch path of triggers: a
    takeover asks the backend first, a refusal for load puts it back at its place."""
    settings, now = relay.settings, relay.clock()
    run_key = str(record["run_key"])
    uri = naming.launch_record(settings.results_uri, run_key)
    taking_over = record.get("state") == records.LAUNCHING
    held = [slot.as_record() for slot in (queue.held_by(record) if taking_over else slots)]
    claim = records.dequeued_claim(record, slots=held, now=now, lease_seconds=settings.claim_lease)
    reference = dict(record.get("trigger") or {})
    delivery = InlineDelivery(
        event=EventInfo(id=str(reference.get("event_id") or run_key), type="relay.queue", source="queue", time=now),
        topic="queue",
        message_id=str(record.get("place") or run_key),
        data=b"",
        format="json",
    )
    loaded = _Loaded(b"", "json", run_key, reference)
    trigger = Trigger(
        pipeline=str(record["pipeline"]),
        parameters=dict(record.get("parameters") or {}),
        labels=record["labels"],
        priority=int(record.get("priority") or 0),
    )
    try:
        definition = relay.catalog.get(trigger.pipeline, trigger_uri=str(reference.get("uri") or run_key))
    except InvalidTriggerError as gone:  # taken out of the catalog while the run waited
        with contextlib.suppress(PreconditionFailedError):
            relay.store.delete(uri, if_generation_match=generation)
            queue.release(relay.store, slots if not taking_over else ())
            return _reject(relay, delivery, loaded, run_key, trigger.pipeline, gone)
        return _duplicate(delivery, run_key, record)
    except TransientError:
        queue.release(relay.store, () if taking_over else slots)  # not claimed: the slots are no one's
        raise
    try:
        claimed_generation = relay.store.write(uri, records.encode(claim), if_generation_match=generation)
    except PreconditionFailedError:
        if not taking_over:
            queue.release(relay.store, slots)
        return _duplicate(delivery, run_key, {**record, "state": "claimed by another drain"})
    claimed = _Claimed(uri, claim, claimed_generation, dict(record) if taking_over else None, True, ready)
    return _submit_claimed(relay, delivery, loaded, claimed, definition, trigger)


def _submit(
    relay: Relay,
    claim: Mapping[str, Any],
    pipeline: PipelineDefinition,
    parameters: Mapping[str, Any],
    trigger: Trigger,
    tenant: str,
) -> LaunchedRun:
    lease_end = records.parse_timestamp(claim["lease_expires_at"])
    # The record keeps the trigger's own labels (a rerun starts from them); the run is told whose and how too.
    triggered = label_rules.triggered_by(claim["trigger"])
    trace_id = tracing.trace_id_of(claim["trigger"])
    labels = label_rules.for_run(
        trigger.labels, tenant=tenant, pipeline=pipeline.name, triggered=triggered, trace_id=trace_id
    )
    margin = timedelta(seconds=submit_margin(relay.settings.claim_lease))
    return relay.backend.launch(
        LaunchRequest(
            run_key=claim["run_key"],
            pipeline=pipeline.name,
            package=pipeline.package,
            spec=pipeline.spec,
            parameters=parameters,
            labels=labels,
            deadline=lease_end - margin,
        )
    )


def _release_claim(relay: Relay, uri: str, generation: int, claim: Mapping[str, Any], *, taken_over: bool) -> None:
    """Free a claim whose submit surely sent nothing. A fresh one is deleted, so the redelivery claims anew and
    submits without asking the backend; one taken over is only expired, as the crashed holder's submit (which
    this delivery did not make) may still show up, and the next taker must ask again."""
    if taken_over:
        _expire_claim(relay.store, uri, generation, claim, relay.clock())
        return
    # If this fails the lease simply runs out; a takeover then asks the backend first.
    with contextlib.suppress(PreconditionFailedError, TransientError):
        relay.store.delete(uri, if_generation_match=generation)


def _expire_claim(store: BlobStore, uri: str, generation: int, claim: Mapping[str, Any], now: datetime) -> None:
    expired = {**claim, "lease_expires_at": records.timestamp(now)}
    # If this fails the lease simply runs out; a takeover still asks the backend first.
    with contextlib.suppress(PreconditionFailedError, TransientError):
        store.write(uri, records.encode(expired), if_generation_match=generation)


def _duplicate(delivery: Source, run_key: str, record: Mapping[str, Any]) -> Outcome:
    return Outcome(
        "duplicate",
        f"already {record.get('state')}: {run_key} (run {record.get('run_id')})",
        delivery.event.id,
        delivery.uri,
        run_key,
        record.get("run_id"),
        record.get("pipeline"),
        tenant=record.get("tenant") or None,
    )


def _read_record(store: BlobStore, uri: str) -> dict[str, Any] | None:
    try:
        return records.decode(store.read(uri).data)
    except BlobNotFoundError:
        return None
