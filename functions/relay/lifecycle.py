"""After the launch: records brought to the backend's truth (reconcile), a run stopped (cancel), a failed or
cancelled run started again as a new attempt (rerun)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from relay import absence, audit, chain_runs, chains, drain, naming, queue, records, retries
from relay import policy as rules
from relay.actions import ActionRequest
from relay.catalog import check_parameters
from relay.cursor import Cursor, read_cursor, rotated, save_cursor
from relay.errors import (
    BackendBusyError,
    BackendUnavailableError,
    BlobNotFoundError,
    ClaimHeldError,
    InvalidTriggerError,
    PermanentError,
    PolicyDeniedError,
    PreconditionFailedError,
    Problem,
    RelayError,
    TransientError,
)
from relay.events import EventInfo, InlineDelivery
from relay.naming import attempt_key as attempt_key  # its home was here: importers keep finding it
from relay.outcome import Outcome
from relay.ports import FAILURE_USER, RUN_FAILED, RUN_MISSING, RUN_RUNNING, RunState
from relay.results import publish_record, record_result
from relay.service import Relay, _claim_and_launch, _Loaded, close_due_sets
from relay.status import RunRecords, read_run
from relay.triggers import RESERVED_PARAMETERS, Trigger, label_problems

# The longest a backend's Retry-After holds the ticks off: three ticks of the default 5-minute schedule.
MAX_WAIT = 900.0


class LifecycleError(PermanentError):
    """The request cannot be done as asked (no such run, a run still going, a policy that no longer allows it)."""

    code = "refused"


# --- reconcile -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What one reconcile tick learnt of one run, and what it recorded."""

    run_key: str
    recorded: str  # the state the records held before
    backend: str  # the backend's state (RunState.state), or "error"
    action: str  # "result" (wrote result.json), "kept" (the run's own result won), "running", "none"
    message: str = ""


@dataclass(frozen=True)
class Retried:
    """What a tick did about one failed run's retry: "waiting" until `retry_at`, "started" (or "queued") the next
    attempt `next_key`, "none" (the chain ends there, `message` says why), or "held" (the next tick tries again)."""

    run_key: str
    action: str
    next_key: str = ""
    retry_at: str = ""
    message: str = ""


@dataclass(frozen=True)
class Tick:
    """What one reconcile tick did: the runs it asked about; how many launched runs it found without a result; why
    it stopped before its budget or the list ran out ("" : it did not); the run key the next tick starts past; and
    whether that place was saved (False: another tick at once saved its own first, and that one stands); then
    what its drain of the queue did, how many slots its sweep gave back, the retries and the chains it saw to."""

    seen: tuple[Seen, ...] = ()
    unfinished: int | None = None  # None: not listed (a tick held off by a wait)
    stopped: str = ""
    after: str = ""
    saved: bool = True
    drained: drain.Drained | None = None  # None: no drain (a tick held off by a wait)
    freed: int = 0
    retried: tuple[Retried, ...] = ()
    sets: tuple[Outcome, ...] = ()  # sets of objects this tick closed: launched (or queued), or incomplete
    followed: tuple[chain_runs.Followed, ...] = ()
    lines: tuple[Outcome, ...] = ()  # the outcome lines the tick logs besides its summary: stuck runs, absences


def reconcile(relay: Relay, *, limit: int | None = None) -> Tick:
    """Ask the backend about launched runs that have no result, at most `limit` (RELAY_RECONCILE_PER_TICK) a tick,
    in run key order from past where the last tick stopped, wrapping around: with N runs in flight, each is asked
    about within ceil(N / limit) ticks, however old or new.

    A 5xx, a 429, a refusal for load or no answer from the backend ends the tick at that run: what was reached is
    recorded and the place saved before it, so the next tick starts there; a Retry-After (at most MAX_WAIT) holds
    the ticks off until then. A 4xx about one run is that run's: the tick goes on.

    Idempotent: a run that has a result is never looked at again; every write is conditional (result.json
    create-only, launch.json and the cursor generation-matched), so a result the run writes meanwhile always wins,
    and two ticks at once write each record at most once. A tick that crashes saves no place: the next one does
    the same runs again, and finds those it recorded ended."""
    limit = limit or relay.settings.reconcile_per_tick
    where = naming.reconcile_cursor(relay.settings.results_uri, relay.backend.name)
    now = relay.clock()
    start = read_cursor(relay.store, where)
    if start.not_before is not None and now < start.not_before:
        held = f"the {relay.backend.name} backend asked for a wait until {records.timestamp(start.not_before)}"
        return Tick(stopped=held, after=start.after)
    keys, ended, retrying, chaining = _listed(relay)
    # Slots a crash left held, given back first; then the runs with a place in the queue are left out: they have
    # nothing at the backend to ask about, and reading each one's record would make a tick's cost grow with the
    # queue. A run that holds a slot is asked about all the same (one launched by a drain that died before
    # removing its place), so no slot stays held by a run whose end goes unrecorded.
    swept = queue.sweep(relay.store, relay.settings.results_uri, ended, now, relay.settings.claim_lease)
    waiting = swept.queued - swept.holders
    keys = [key for key in keys if key not in waiting]
    seen: list[Seen] = []
    stuck: list[Outcome] = []
    after, stopped, not_before, asked = start.after, "", None, 0
    for key in rotated(keys, start.after):
        if asked >= limit:
            break
        found = _in_flight(relay, key)
        if isinstance(found, Seen):
            seen.append(found)
        elif found is not None:
            launch, generation = found
            asked += 1
            try:
                state = relay.backend.run_state(key, str(launch["run_id"]))
            except (TransientError, PermanentError) as error:
                if not _about_the_run(error):
                    stopped = f"stopped at {key}: {_one_line(str(error))}"
                    wait = error.retry_after if isinstance(error, BackendUnavailableError) else None
                    if wait:
                        not_before = now + timedelta(seconds=min(MAX_WAIT, wait))
                        stopped += f"; no call before {records.timestamp(not_before)}"
                    break
                seen.append(Seen(key, launch["state"], "error", "none", _one_line(str(error))))
            else:
                seen.append(_record(relay, launch, generation, state))
                if not state.terminal and (late := _stuck(relay, launch, now)) is not None:
                    stuck.append(late)
        after = key
    saved = save_cursor(relay.store, where, start, Cursor(after, not_before), now=now, note=stopped)
    freed = swept.freed
    # Every tick, whatever the backend: a segment's tail is provably whole once sealed (relay.audit_trail); this
    # process's buffered entries are written first, so the seal names them.
    # Records a crash left without their entry get a late one, which the seal then names. Imported here: the
    # trail's reading and proving are the tick's, not an event's (cold start).
    from relay import audit_trail

    audit.flush(relay.store)
    trail = audit.location(relay.settings.results_uri, relay.settings.audit_uri)
    audit_trail.late(relay.store, relay.settings.results_uri, trail, now)
    audit_trail.seal(relay.store, trail, now)
    lines = (*stuck, *absence.check(relay))  # the policy's expectations, whatever the backend's state
    # A backend in trouble gets no submits from this tick either: the next tick, or a run's end, drains and retries.
    if stopped:
        return Tick(
            tuple(seen),
            len(keys),
            stopped,
            after,
            saved,
            drain.Drained(stopped="not drained: the tick stopped early"),
            freed,
            lines=lines,
        )
    retrying |= {item.run_key for item in seen if item.action == "result" and item.backend == RUN_FAILED}
    retried = tuple(step for key in sorted(retrying) if (step := retry(relay, key)) is not None)
    # Before the drain: a set that queues for a cap launches from this same tick when there is room.
    closed_sets = close_due_sets(relay)
    # Ends this tick recorded left their markers after the listing: a look at each costs one read.
    chaining |= {item.run_key for item in seen if item.action == "result"}
    followed = tuple(look for key in sorted(chaining) if (look := chain_runs.follow(relay, key)) is not None)
    return Tick(
        tuple(seen), len(keys), stopped, after, saved, drain.drain(relay), freed, retried, closed_sets, followed, lines
    )


@dataclass(frozen=True)
class EndSeen:
    """What a message saying a run ended did: `action` "result" (its end recorded now, from the backend's answer),
    "recorded" (recorded already, by the run's exit step or anyone), "running" (the backend says it has not ended:
    nothing freed), "none" (no such launched run here); and the drain its freed slots allowed (None: none)."""

    run_key: str
    action: str
    message: str = ""
    drained: drain.Drained | None = None  # None also when this instance's drain of the tenant goes round for it


def end_seen(relay: Relay, run_key: str) -> EndSeen:
    """A run's end, as a message on the notify topic tells of it (the pipeline's exit step publishes its result
    there, and every end Relay records): a hint to look, never proof. The end counts only when its result record
    is there, or when the backend says the run ended (then recorded here as a tick would record it); only then
    are the run's slots given back and its tenant's queue drained, so the next queued run launches now, not at the
    next tick. A forged or early message frees nothing; a repeated one finds the end recorded and the cap full
    again (its drain launches nothing more). Cost: two reads (the launch record, the result), then the
    backend's answer and the result's write when no result is there; a drain only for a run that held slots."""
    results = relay.settings.results_uri
    if not naming.RUN_KEY.match(run_key):
        return EndSeen(run_key, "none", "not a run key")
    found = _in_flight(relay, run_key)
    if not isinstance(found, tuple):
        return EndSeen(run_key, "none", "no run launched on this backend")
    launch, generation = found
    try:
        relay.store.read(naming.result_record(results, run_key))
        action, message = "recorded", "its end is recorded"
    except BlobNotFoundError:
        try:
            state = relay.backend.run_state(run_key, str(launch["run_id"]))
        except PermanentError as refused:  # about this run (not found, say): a redelivery would hear the same
            return EndSeen(run_key, "none", _one_line(str(refused)))
        if not state.terminal:
            return EndSeen(run_key, "running", f"the {relay.backend.name} backend says it is {state.state}")
        seen = _record(relay, launch, generation, state)
        action, message = ("result" if seen.action == "result" else "recorded"), seen.message
    # Its slots were given back by whoever recorded the end (a recorder that died first leaves them to the tick's
    # sweep): what is left is to launch what they make room for.
    if not queue.held_by(launch):
        return EndSeen(run_key, action, message)
    return EndSeen(run_key, action, message, drain.after_end(relay, str(launch.get("tenant") or "")))


def ended_run(message: Mapping[str, Any]) -> str | None:
    """The run key a notify topic's message names when it tells of a run's end (attributes `state`, one of the
    ended states, and `run_key`, as relay.results.publish_record sets them); None for any other record."""
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping) or attributes.get("state") not in records.ENDED:
        return None
    key = attributes.get("run_key")
    return key if isinstance(key, str) and key else None


def end_summary(seen: EndSeen) -> str:
    line = f"end of {seen.run_key}: {seen.action}" + (f" ({seen.message})" if seen.message else "")
    if seen.drained is not None:
        line += f"; {len(seen.drained.launched)} launched from the queue"
        line += f" (the drain: {seen.drained.stopped})" if seen.drained.stopped else ""
    return line


def _stuck(relay: Relay, launch: Mapping[str, Any], now: datetime) -> Outcome | None:
    """The `stuck` line of a run still going past its pipeline's expected time (the tenant's `expected_times`);
    logged each tick it is, the alert's rate limit makes one notification of them."""
    tenant = relay.policy.tenant(str(launch.get("tenant") or ""))
    expected = dict(tenant.expected_times).get(str(launch.get("pipeline"))) if tenant else None
    since = _moment(launch.get("launched_at"))
    if expected is None or since is None or (now - since).total_seconds() <= expected:
        return None
    running = round((now - since).total_seconds(), 3)
    trigger = launch.get("trigger") or {}
    pipeline = launch.get("pipeline")
    return Outcome(
        "stuck",
        f"{launch.get('run_key')} has been going {running:.0f} s, past the {expected:.0f} s expected of {pipeline}",
        str(trigger.get("event_id") or ""),
        str(trigger.get("uri") or ""),
        str(launch.get("run_key")),
        str(launch.get("run_id") or "") or None,
        str(launch.get("pipeline") or "") or None,
        tenant=str(launch.get("tenant") or "") or None,
        running_s=running,
        expected_s=expected,
    )


def _about_the_run(error: RelayError) -> bool:
    """A backend's answer about this one run (a 4xx other than 429, a request it refused), which says nothing of
    the next: the tick goes on. Anything else is the backend's own trouble, or the way to it."""
    if isinstance(error, PermanentError):
        return True
    if isinstance(error, BackendBusyError) or not isinstance(error, BackendUnavailableError):
        return False
    return error.status is not None and 400 <= error.status < 500 and error.status != 429


def _listed(relay: Relay) -> tuple[list[str], set[str], set[str], set[str]]:
    """Keys of the runs that have a launch record and no result yet, of those that have a result, of those whose
    retry waits for a decision or its time, and of those whose chain's next runs wait to start: one listing, of
    names only."""
    folder = naming.runs_folder(relay.settings.results_uri)
    launched: set[str] = set()
    ended: set[str] = set()
    retrying: set[str] = set()
    chaining: set[str] = set()
    by_name = {naming.LAUNCH: launched, naming.RESULT: ended, naming.RETRY: retrying, naming.CHAIN: chaining}
    for uri in relay.store.list(folder):
        key, name = naming.listed_run_record(folder, uri)
        if (keys := by_name.get(name)) is not None:
            keys.add(key)
    return sorted(launched - ended), ended, retrying, chaining


def _in_flight(relay: Relay, key: str) -> tuple[dict[str, Any], int] | Seen | None:
    """The launch record of a run to ask this backend about, and its generation; None for one to leave alone; a
    Seen saying why a launch record cannot be read."""
    try:
        blob = relay.store.read(naming.launch_record(relay.settings.results_uri, key))
    except BlobNotFoundError:
        return None  # a claim released after a failed submit
    try:
        launch = records.decode(blob.data)
    except ValueError as error:
        return Seen(key, "unreadable", "error", "none", _one_line(f"launch.json: {error}"))
    if launch.get("state") not in (records.LAUNCHED, records.RUNNING) or not launch.get("run_id"):
        return None  # still being claimed: the claim's own lease and takeover settle it
    if launch.get("backend") != relay.backend.name:
        return None  # launched by another deployment's backend: this one cannot ask about it
    return launch, blob.generation


def _record(relay: Relay, launch: dict[str, Any], generation: int, state: RunState) -> Seen:
    key, recorded = launch["run_key"], launch["state"]
    if state.terminal:
        message = state.message or f"the {relay.backend.name} backend reports the run {state.state}"
        ended = records.ended_record(
            launch=launch,
            state=state.state,
            message=f"{message} (recorded by reconcile: the run wrote no result of its own)",
            started=state.started_at,
            finished=state.finished_at or relay.clock(),
            recorded_by="reconcile",
            failure=state.failure,
        )
        written = record_result(relay.store, relay.notifier, relay.settings.results_uri, ended, launch)
        return Seen(key, recorded, state.state, "result" if written else "kept", ended["message"])
    if state.state == RUN_RUNNING and recorded == records.LAUNCHED:
        running = {
            **launch,
            "state": records.RUNNING,
            "message": f"run {launch['run_id']} running on {launch['backend']}",
            "running_at": records.timestamp(state.started_at or relay.clock()),
        }
        try:
            publish_record(relay.notifier, running)
            relay.store.write(
                naming.launch_record(relay.settings.results_uri, key),
                records.encode(running),
                if_generation_match=generation,
            )
        except PreconditionFailedError:
            return Seen(key, recorded, state.state, "none", "the launch record changed meanwhile; next tick")
        return Seen(key, recorded, state.state, "running")
    note = state.message if state.state == RUN_MISSING else ""
    return Seen(key, recorded, state.state, "none", note)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


# --- who may act on which run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose runs a request may touch: the operator's (everyone's), or one tenant's (`tenant` "" : the runs of a
    deployment without tenants)."""

    operator: bool = False
    tenant: str = ""

    def owns(self, launch: Mapping[str, Any]) -> bool:
        return self.operator or str(launch.get("tenant") or "") == self.tenant


OPERATOR = Scope(operator=True)


def scope_for_topic(policy: rules.Policy, topic: str) -> Scope:
    """A message's scope comes from the topic it was published to, as for triggers: never from what it says."""
    tenant = rules.tenant_for_topic(policy, topic)
    if tenant is None and policy.source:
        raise PolicyDeniedError(topic, [Problem("(origin)", f"a topic of a tenant ({rules.origins(policy)})", topic)])
    return Scope(tenant=tenant.name if tenant else "")


def resolve(relay: Relay, scope: Scope, given: str) -> RunRecords:
    """The run `given` names within `scope`: a key as the scope's triggers would have it (`<tenant>--<key>`), or
    a full key of one of the scope's runs. Another tenant's run is "not found", as if it did not exist."""
    results = relay.settings.results_uri
    candidates = [given]
    if not scope.operator and scope.tenant:
        scoped = rules.scoped_run_key(relay.policy.tenant(scope.tenant) or rules.Tenant(scope.tenant), given)
        candidates = [given, scoped] if given != scoped else [given]
    for key in candidates:
        if not naming.RUN_KEY.match(key):
            continue
        run = read_run(relay.store, results, key)
        if run is not None and scope.owns(run.launch or run.rejection or {}):
            return run
    where = "" if scope.operator else f" of tenant {scope.tenant or '(none)'}"
    raise LifecycleError(f"no run {given}{where} under {results}")


# --- cancel ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a cancel or rerun did: `changed` False when it left everything as it was."""

    run_key: str
    changed: bool
    state: str
    message: str
    run_id: str | None = None
    pipeline: str | None = None


def cancel(relay: Relay, run_key: str, *, scope: Scope = OPERATOR, by: str = "relay cancel") -> Answer:
    """Terminate the run on its backend and record `cancelled`; a run that has ended is said so and left alone."""
    run = resolve(relay, scope, run_key)
    key, launch = run.run_key, run.launch
    if launch is None or run.rejection is not None:
        return Answer(key, False, run.state, f"{key} was rejected: there is no run to cancel")
    if run.result is not None:
        return Answer(key, False, run.state, f"{key} already {run.state}; nothing changed", launch.get("run_id"))
    if launch.get("state") == records.QUEUED:
        return _cancel_queued(relay, key, launch, by)
    if launch.get("state") == records.LAUNCHING or not launch.get("run_id"):
        raise ClaimHeldError(f"{key} is still being launched; cancel it once it is launched")
    if launch.get("backend") != relay.backend.name:
        raise LifecycleError(f"{key} runs on the {launch.get('backend')} backend; this is {relay.backend.name}")
    run_id = str(launch["run_id"])
    state = relay.backend.run_state(key, run_id)
    if state.terminal:
        message = f"{key} already {state.state} on {relay.backend.name}; nothing cancelled (the next sync records it)"
        return Answer(key, False, state.state, message, run_id)
    if state.state == RUN_MISSING:
        raise LifecycleError(f"{key}: {state.message}")
    relay.backend.terminate(key, run_id)
    ended = records.ended_record(
        launch=launch,
        state=records.CANCELLED,
        message=f"cancelled by {by}",
        started=state.started_at,
        finished=relay.clock(),
        recorded_by=by,
    )
    if not record_result(relay.store, relay.notifier, relay.settings.results_uri, ended, launch):
        # The run wrote its own result while we stopped it: that record stands.
        own = read_run(relay.store, relay.settings.results_uri, key)
        ended_as = own.state if own else "ended"
        return Answer(key, False, ended_as, f"{key} {ended_as} on its own before the cancel was recorded", run_id)
    drain.drain(relay)  # its slots are free: the next queued run may go
    return Answer(key, True, records.CANCELLED, f"{key} cancelled (run {run_id} terminated)", run_id, run.pipeline)


def _cancel_queued(relay: Relay, key: str, launch: Mapping[str, Any], by: str) -> Answer:
    """A queued run never launches once cancelled: its queued record is replaced, generation-matched, so that a
    drain claiming it at the same moment and the cancel cannot both win; then its result and its place go."""
    results = relay.settings.results_uri
    uri = naming.launch_record(results, key)
    blob = relay.store.read(uri)
    if records.decode(blob.data).get("state") != records.QUEUED:
        raise ClaimHeldError(f"{key} is being launched from the queue; cancel it once it is launched")
    cancelled = {**launch, "state": records.CANCELLED, "message": f"cancelled in the queue by {by}"}
    try:
        relay.store.write(uri, records.encode(cancelled), if_generation_match=blob.generation)
    except PreconditionFailedError:
        raise ClaimHeldError(f"{key} is being launched from the queue; cancel it once it is launched") from None
    ended = records.ended_record(
        launch=launch,
        state=records.CANCELLED,
        message=f"cancelled by {by} while queued: it never launched",
        started=None,
        finished=relay.clock(),
        recorded_by=by,
    )
    record_result(relay.store, relay.notifier, results, ended, cancelled)
    queue.remove_entry(relay.store, results, str(launch.get("tenant") or ""), str(launch.get("place")))
    message = f"{key} cancelled while queued: it never launched"
    return Answer(key, True, records.CANCELLED, message, None, str(launch.get("pipeline") or ""))


# --- rerun -----------------------------------------------------------------------------------------------------


def rerun(
    relay: Relay,
    run_key: str,
    *,
    scope: Scope = OPERATOR,
    force: bool = False,
    request_id: str = "",
    by: str = "relay rerun",
    forcing: str = "the attribute force=true",
) -> Answer:
    """Start the next attempt of the run's chain with the same trigger and parameters, if its latest attempt
    ended failed or cancelled (or `force`). Exactly once per attempt: the attempt's launch record is claimed
    create-only, as a trigger's is; the catalog and the policy are checked again first. `forcing` names how the
    caller asks for `force` (a flag, an attribute), in the refusal that needs it."""
    run = resolve(relay, scope, run_key)
    if run.launch is None or run.rejection is not None:
        raise LifecycleError(f"{run.run_key} was rejected: fix the trigger and send it again")
    trigger = dict(run.launch.get("trigger") or {})
    first = str(trigger.get("attempt_of") or run.run_key)
    latest, number = _latest_attempt(relay, first)
    request_id = request_id or uuid.uuid4().hex
    if latest.launch and (latest.launch.get("trigger") or {}).get("request_id") == request_id:
        # This very request started it (a redelivered message): done already.
        return Answer(latest.run_key, False, latest.state, f"{latest.run_key} was started by this request already")
    if latest.state not in (records.FAILED, records.CANCELLED) and not force:
        going = latest.state not in records.ENDED
        raise LifecycleError(
            f"{latest.run_key} is {latest.state}"
            + ("; wait for it to end, or cancel it first" if going else f"; ask again with {forcing} to run it again")
        )
    return start_attempt(relay, latest, first, number, request_id=request_id, by=by, via="rerun")


def start_attempt(
    relay: Relay, latest: RunRecords, first: str, number: int, *, request_id: str, by: str, via: str
) -> Answer:
    """Start attempt `number` + 1 of the chain `first`, after `latest` (attempt `number`), with its trigger,
    parameters and labels: a rerun's and a retry's one way. Exactly once per attempt: the attempt's launch record
    is claimed create-only, as a trigger's is; the catalog and the policy are checked again first (a refusal is
    InvalidTriggerError). Under a cap or a pause the attempt waits its turn in the queue like a trigger."""
    launch = latest.launch or {}
    trigger = dict(launch.get("trigger") or {})
    new_key = attempt_key(first, number + 1)
    definition = relay.catalog.get(str(launch["pipeline"]), trigger_uri=new_key)
    parameters = {k: v for k, v in dict(launch.get("parameters") or {}).items() if k not in RESERVED_PARAMETERS}
    tenant_name = str(launch.get("tenant") or "")
    tenant = relay.policy.tenant(tenant_name) if tenant_name else None
    problems = check_parameters(definition, parameters)
    if tenant_name and tenant is None:
        problems.append(Problem("tenant", "a tenant of the policy", repr(tenant_name)))
    problems += rules.check_request(relay.policy, tenant, definition.name, parameters, relay.policy_context)
    # Recorded before a release that reserved keys or kept room for Relay's own: such labels fail as a trigger would.
    labels = launch.get("labels") or {}
    problems += label_problems(labels)
    if problems:
        raise InvalidTriggerError(f"{via} of {latest.run_key}", problems, code="policy_denied")
    now = relay.clock()
    reference = {
        **{k: v for k, v in trigger.items() if k not in ("attempt", "attempt_of", "previous_attempt")},
        **records.attempt_link(first=first, previous=latest.run_key, number=number + 1),
        "via": via,
        "requested_by": by,
        "request_id": request_id,
        "event_id": request_id,
        "event_time": records.timestamp(now),
    }
    delivery = InlineDelivery(
        event=EventInfo(id=request_id, type=f"relay.{via}", source=by, time=now),
        topic=by,
        message_id=request_id,
        data=b"",
        format="json",
    )
    loaded = _Loaded(b"", "json", new_key, reference)
    attempt = Trigger(
        pipeline=definition.name,
        parameters=parameters,
        labels=labels,
        priority=int(launch.get("priority") or 0),
        retries=_asked(launch),
        chain=chains.steps_of(launch),  # a later attempt carries the chain on: its end is the one that counts
    )
    try:
        # The launch path of triggers: create-only claim, takeover after a crash, backpressure, exactly once.
        outcome = _claim_and_launch(relay, delivery, loaded, new_key, attempt, definition, tenant)
    except ClaimHeldError:
        return Answer(new_key, False, records.LAUNCHING, f"{new_key} is being started by another request")
    if outcome.outcome == "duplicate":
        return Answer(new_key, False, records.LAUNCHED, f"{new_key} was started by another request already")
    if outcome.outcome == "queued":
        # Under a cap or a pause, an attempt waits its turn like a trigger: launched now if it has room.
        launched = next((o for o in drain.drain(relay).outcomes if o.run_key == new_key), None)
        if launched is None or launched.outcome != "launched":
            message = f"queued {new_key} (attempt {number + 1} of {first}): {outcome.message}"
            return Answer(new_key, True, records.QUEUED, message, None, definition.name)
        outcome = launched
    if outcome.outcome != "launched":
        raise LifecycleError(f"{new_key}: {outcome.message}")
    message = f"started {new_key} (attempt {number + 1} of {first}) as run {outcome.run_id}"
    return Answer(new_key, True, records.LAUNCHED, message, outcome.run_id, definition.name)


def _latest_attempt(relay: Relay, first: str) -> tuple[RunRecords, int]:
    """The chain's last attempt that has records, and its number (the first run is attempt 1)."""
    results = relay.settings.results_uri
    latest = read_run(relay.store, results, first)
    if latest is None:
        raise LifecycleError(f"no run {first} under {results}")
    number = 1
    while (following := read_run(relay.store, results, attempt_key(first, number + 1))) is not None:
        latest, number = following, number + 1
    return latest, number


# --- retries ---------------------------------------------------------------------------------------------------

RETRIED_BY = "relay retries"


def retry(relay: Relay, run_key: str) -> Retried | None:
    """Carry out what the policy says about failed run `run_key`'s retry.json (relay.results leaves one beside
    every failed end): the first look decides (relay.retries) and writes `retry_at` and the next attempt's key
    into it; a look at or past `retry_at` starts that attempt as `relay rerun` would. The marker goes once the
    chain's next step is settled. Exactly once: the next attempt's key is derived (attempt n + 1 of the first
    run), and its launch record claimed create-only, so two ticks at once, or a tick and a rerun, start it once.
    None: no marker (another tick settled it)."""
    results = relay.settings.results_uri
    uri = naming.retry_record(results, run_key)
    try:
        blob = relay.store.read(uri)
        marker = records.decode(blob.data)
    except BlobNotFoundError:
        return None
    except ValueError as error:
        relay.store.delete(uri, if_generation_match=blob.generation)
        return Retried(run_key, "none", message=_one_line(f"retry.json: {error}"))
    run = read_run(relay.store, results, run_key)
    if run is None or run.result is None or run.launch is None:
        return Retried(run_key, "held", message="its end is not recorded yet")
    if run.state != records.FAILED:
        relay.store.delete(uri, if_generation_match=blob.generation)
        return Retried(run_key, "none", message=f"it ended {run.state}")
    trigger = run.launch.get("trigger") or {}
    first, number = str(trigger.get("attempt_of") or run_key), int(trigger.get("attempt") or 1)
    if "retry_at" not in marker:
        setting, where = retries.retry_for(relay.policy, str(run.launch.get("tenant") or ""), run.pipeline)
        failure = str(run.result.get("failure") or marker.get("failure") or FAILURE_USER)
        failed_at = _moment(run.result.get("finished_at")) or relay.clock()
        decision = retries.decide(setting, where, failure, number, failed_at, _asked(run.launch))
        if decision.retry_at is None:
            relay.store.delete(uri, if_generation_match=blob.generation)
            return Retried(run_key, "none", message=decision.reason)
        marker = {
            **marker,
            "retry_at": records.timestamp(decision.retry_at),
            "next_attempt": attempt_key(first, number + 1),
            "message": decision.reason,
        }
        try:
            generation = relay.store.write(uri, records.encode(marker), if_generation_match=blob.generation)
        except PreconditionFailedError:
            return Retried(run_key, "held", message="another tick decided meanwhile")
        blob = replace(blob, generation=generation)
    retry_at = str(marker["retry_at"])
    when = _moment(retry_at)
    if when is not None and relay.clock() < when:
        return Retried(run_key, "waiting", str(marker.get("next_attempt") or ""), retry_at, str(marker.get("message")))
    request_id = f"retry-{attempt_key(first, number + 1)}"
    try:
        answer = start_attempt(relay, run, first, number, request_id=request_id, by=RETRIED_BY, via="retry")
    except (InvalidTriggerError, LifecycleError) as refused:
        relay.store.delete(uri, if_generation_match=blob.generation)
        return Retried(run_key, "none", message=_one_line(f"not retried: {refused}"))
    if answer.state == records.LAUNCHING:
        return Retried(run_key, "held", answer.run_key, retry_at, answer.message)  # a claim the next tick settles
    relay.store.delete(uri, if_generation_match=blob.generation)
    action = "queued" if answer.state == records.QUEUED else "started"
    return Retried(run_key, action, answer.run_key, retry_at, answer.message)


def _asked(launch: Mapping[str, Any]) -> int | None:
    """The retries the run's trigger asked for (its launch record keeps them), or None: the policy's."""
    asked = launch.get("retries")
    return asked if isinstance(asked, int) and not isinstance(asked, bool) else None


def _moment(value: object) -> datetime | None:
    """A recorded time, or None for one that is absent or unreadable (a run's own result may say anything)."""
    try:
        moment = records.parse_timestamp(str(value)) if value else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


# --- actions on the trigger topic (what a message asks: relay.actions) -----------------------------------------


def handle_action(relay: Relay, request: ActionRequest) -> Answer:
    """Cancel or rerun as the topic's tenant; LifecycleError and PolicyDeniedError are refusals to acknowledge."""
    scope = scope_for_topic(relay.policy, request.topic)
    by = f"message {request.message_id} on {request.topic}"
    if request.action == "cancel":
        return cancel(relay, request.run_key, scope=scope, by=by)
    return rerun(relay, request.run_key, scope=scope, force=request.force, request_id=request.message_id, by=by)


def tick_summary(tick: Tick) -> str:
    """One line for the log: how many runs were looked at, what was recorded, and why the tick stopped early."""
    counts: dict[str, int] = {}
    for item in tick.seen:
        counts[item.action] = counts.get(item.action, 0) + 1
    done = ", ".join(f"{count} {action}" for action, count in sorted(counts.items())) or "nothing to do"
    listed = "" if tick.unfinished is None else f" of {tick.unfinished} without a result"
    line = f"reconcile: {len(tick.seen)} run(s) checked{listed}: {done}"
    if tick.stopped:
        line += f"; {tick.stopped}"
    if not tick.saved:
        line += "; another tick saved its place first"
    if tick.drained is not None and (tick.drained.launched or (tick.drained.stopped and not tick.stopped)):
        line += f"; {len(tick.drained.launched)} launched from the queue"
        line += f" (the drain: {tick.drained.stopped})" if tick.drained.stopped else ""
    if tick.freed:
        line += f"; {tick.freed} slot(s) no run held given back"
    started = [item.next_key for item in tick.retried if item.action in ("started", "queued")]
    if started:
        line += f"; retried: {', '.join(started)}"
    if tick.sets:
        line += "; sets closed: " + ", ".join(f"{o.run_key} {o.outcome}" for o in tick.sets)
    chained = [link.run_key for item in tick.followed for link in item.links if link.outcome in ("launched", "queued")]
    if chained:
        line += f"; chained: {', '.join(chained)}"
    return line
