"""The launch a step runs for: the record the functions wrote, checked before the step lists, resolves or sends.

Whoever may start runs on the backend can give a run any key, tenant and parameters. A step does only what a
launch record under the deployment's results location says (`runs/<run_key>/launch.json`, written by the
functions, in state launching or later): the same pipeline, run key, tenant and parameters, compared exactly. Only
the functions can write those records: the steps' identity may read them and create nothing but results,
refusals and direct results (infra/deploy.sh `bindings`, infra/terraform/iam.tf). The local backend has no IAM:
there, whoever can write the results folder can write a launch record.

A run without a launch record does nothing, unless the policy's `direct_runs` names the tenant an operator's
direct run acts as; such a run records its result apart from every run key (`direct/<run_id>.json`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.steps.errors import StepError
from relay import naming, records
from relay.adapters.stores import results_store
from relay.config import setting
from relay.errors import BlobNotFoundError, RelayError
from relay.policy import PUSH, RATCHET
from relay.ports import BlobStore
from relay.trace import Trace, parse_traceparent
from relay.triggers import RESERVED_PARAMETERS, describe_value

# What a run gets for a parameter its launch left out: the backend fills in the pipeline's default. The pipelines'
# signatures (push_pipeline.py, ratchet_pipeline.py) take their defaults from here, so the two never differ.
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    PUSH: {"select": "", "overwrite": False, "run_key": "", "results_uri": "", "tenant": ""},
    RATCHET: {
        "source": "",
        "destination": {},
        "tolerance": 0.1,
        "reset_baseline": False,
        "reason": "",
        "run_key": "",
        "results_uri": "",
        "tenant": "",
    },
}
LIVE = (records.LAUNCHING, records.LAUNCHED, records.RUNNING)  # a launch record's states, claimed onwards
_ABSENT = object()


@dataclass(frozen=True)
class Launch:
    """What a run was verified to be: launched by the functions, or an operator's direct run."""

    run_key: str
    tenant: str
    results_uri: str  # the deployment's results location: every record, baseline and report goes under it
    direct: bool = False
    # The launching delivery's span (relay.trace), as its launch record keeps it: the step's span is its child.
    parent: Trace | None = None


@dataclass(frozen=True)
class LaunchRecords:
    """The deployment's results location (compiled into the catalog as RELAY_RESULTS_URI) and its store."""

    results_uri: str = ""
    store: BlobStore | None = None

    def read(self, run_key: str) -> dict[str, Any] | None:
        """The launch record of `run_key`, None when there is none; StepError when it cannot be read."""
        if self.store is None:
            return None
        uri = naming.launch_record(self.results_uri, run_key)
        try:
            return records.decode(self.store.read(uri).data)
        except BlobNotFoundError:
            return None
        except ValueError as exc:
            raise StepError(403, f"policy_denied: {uri}: expected a launch record, found {exc}") from None
        except RelayError as exc:  # cannot tell now: never run unverified
            raise StepError(503, f"{uri}: cannot read the launch record: {exc}") from None


def launch_records(environ: Mapping[str, str]) -> LaunchRecords:
    uri = setting(environ, "RESULTS_URI")
    if not uri:
        return LaunchRecords()
    return LaunchRecords(uri, results_store(uri, setting(environ, "LOCAL_ROOT", tempfile.gettempdir())))


def verify_launch(
    launches: LaunchRecords,
    pipeline: str,
    parameters: Mapping[str, Any],
    *,
    direct_tenant: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> Launch:
    """The launch `parameters` (all a run acts on, `run_key` and `tenant` among them) are exactly those of; a
    StepError 403 naming what differs otherwise. `direct_tenant`: the policy's direct_runs ("" for none).
    `defaults`: a pipeline of one's own's signature defaults, what the backend fills in for a parameter its launch
    left out (Relay's pipelines have theirs in DEFAULTS, which a caller's never replace)."""
    results_uri = launches.results_uri
    if not results_uri or launches.store is None:
        raise _refused("expected the deployment's results location (RELAY_RESULTS_URI) to verify launches, found none")
    asked = parameters.get("results_uri") or ""
    if asked and (not isinstance(asked, str) or _plain(asked) != _plain(results_uri)):
        expected = f"the deployment's results location {results_uri}"
        raise _refused(f"parameters.results_uri: expected {expected}, found {asked!r}")
    run_key, tenant = parameters.get("run_key") or "", parameters.get("tenant") or ""
    if not isinstance(run_key, str) or not isinstance(tenant, str):
        raise _refused(f"parameters.run_key and tenant: expected texts, found {run_key!r} and {tenant!r}")
    keyed = bool(naming.RUN_KEY.match(run_key))
    record = launches.read(run_key) if keyed else None
    if record is not None:
        where = naming.launch_record(results_uri, run_key)
        filled = {**(defaults or {}), **DEFAULTS.get(pipeline, {})}
        differences = _differences(record, pipeline, run_key, tenant, parameters, filled)
        if differences:
            raise _refused(f"run {run_key} is not what the functions launched ({where}): " + "; ".join(differences))
        trigger = record.get("trigger")
        parent = parse_traceparent(trigger.get("traceparent")) if isinstance(trigger, Mapping) else None
        return Launch(run_key, tenant, results_uri, parent=parent)
    if not direct_tenant:
        missing = f"a launch record at {naming.launch_record(results_uri, run_key)}, found none" if keyed else (
            f"{naming.RUN_KEY_RULE} with a launch record, found {run_key!r}")  # fmt: skip
        raise _refused(f"parameters.run_key: expected {missing}; and the policy allows no direct runs (direct_runs)")
    if tenant != direct_tenant:
        raise _refused(f"parameters.tenant: expected {direct_tenant!r}, the one tenant direct runs act as (policy "
                       f"direct_runs), found {tenant!r}")  # fmt: skip
    if run_key and not keyed:
        raise _refused(f"parameters.run_key: expected {naming.RUN_KEY_RULE}, found {run_key!r}")
    return Launch(run_key, tenant, results_uri, direct=True)


def _differences(
    record: Mapping[str, Any],
    pipeline: str,
    run_key: str,
    tenant: str,
    parameters: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> list[str]:
    found = []
    if record.get("state") not in LIVE:
        found.append(f"state: expected one of {', '.join(LIVE)}, found {record.get('state')!r}")
    for name, recorded, asked in (("run_key", record.get("run_key"), run_key), ("pipeline", record.get("pipeline"),
                                  pipeline), ("tenant", record.get("tenant") or "", tenant)):  # fmt: skip
        if recorded != asked:
            found.append(f"{name}: expected {recorded!r}, found {asked!r}")
    launched = record.get("parameters")
    if not isinstance(launched, Mapping):
        return [*found, f"parameters: expected a mapping, found {describe_value(launched)}"]
    # The reserved ones are compared above: run key and tenant with the record's own, the results location with the
    # deployment's (the functions add them only where the pipeline declares them).
    for name in sorted((set(launched) | set(parameters)) - set(RESERVED_PARAMETERS)):
        expected = launched.get(name, defaults.get(name, _ABSENT))
        given = parameters.get(name, defaults.get(name, _ABSENT))
        if not same(expected, given):
            found.append(f"parameters.{name}: expected {_describe(expected)}, found {_describe(given)}")
    return found


def same(a: object, b: object) -> bool:
    """JSON values equal as a backend passes them on: an integer and its float alike, never a bool and a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _describe(value: object) -> str:
    return "nothing" if value is _ABSENT else describe_value(value)


def _plain(uri: str) -> str:
    return uri.rstrip("/")


def _refused(message: str) -> StepError:
    return StepError(403, f"policy_denied: {message}")
