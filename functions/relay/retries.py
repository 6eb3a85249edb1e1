"""Whether and when a failed run starts again by itself: pure decisions on the policy's `retries`.

A run of pipeline P for tenant T is retried as `tenants.T.retries.P` says (the top-level `retries.P` for a
deployment without tenants); no entry, no retry. Attempt n (the first run is attempt 1) that failed for a reason
in `failures` is followed by attempt n + 1 while n <= `retries`, after `backoff` * 2^(n-1) seconds, at most
`max_backoff`. relay.lifecycle carries the decision out, as the attempt `relay rerun` would start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.errors import Problem
from relay.policy_model import Policy, Retry

NO_RETRY = Retry()


def retry_for(policy: Policy, tenant: str, pipeline: str) -> tuple[Retry, str]:
    """The retry settings of `pipeline` for `tenant` ("" : none), and where the policy says them ("" : nowhere)."""
    own = policy.tenant(tenant) if tenant else None
    entries, where = (own.retries, f"tenants.{tenant}.retries") if own is not None else (policy.retries, "retries")
    found = next((retry for name, retry in entries if name == pipeline), None)
    return (found, f"{where}.{pipeline}") if found is not None else (NO_RETRY, "")


def delay(retry: Retry, attempt: int) -> float:
    """Seconds between the end of failed attempt `attempt` and the start of the next: doubling, capped."""
    return min(retry.max_backoff, retry.backoff * float(2 ** min(attempt - 1, 32)))


@dataclass(frozen=True)
class Decision:
    """`retry_at` None: attempt `attempt` is the chain's last, and `reason` says why."""

    attempt: int  # the attempt that failed
    retry_at: datetime | None
    reason: str


def trigger_problems(policy: Policy, tenant: str, pipeline: str, asked: int | None) -> list[Problem]:
    """A trigger's `retries` above its pipeline's `max_retries` (none without a retries entry); not asking passes."""
    if asked is None:
        return []
    retry, where = retry_for(policy, tenant, pipeline)
    if asked <= retry.max_retries:
        return []
    bound = f"{where}.max_retries" if where else f"no retries entry for {pipeline} in the policy"
    return [Problem("retries", f"at most {retry.max_retries} ({bound})", str(asked))]


def decide(
    retry: Retry, where: str, failure: str, attempt: int, failed_at: datetime, asked: int | None = None
) -> Decision:
    """What follows failed attempt `attempt`, whose failure was of kind `failure` (relay.ports.FAILURES); `asked`
    is the run's trigger's own `retries`, within the policy's max_retries (None: the policy's `retries`)."""
    count = retry.retries if asked is None else asked
    if not where or count == 0:
        what = "the trigger asked for no retries" if where and asked == 0 else "the policy sets no retries"
        return Decision(attempt, None, f"{what} for this pipeline")
    if failure not in retry.failures:
        kinds = ", ".join(retry.failures)
        return Decision(attempt, None, f"a {failure} failure is not retried ({where}.failures: {kinds})")
    if attempt > count:
        said = f"{where}.retries: {count}" if asked is None else f"the trigger's retries: {count}"
        return Decision(attempt, None, f"attempt {attempt} was the last ({said})")
    wait = delay(retry, attempt)
    return Decision(attempt, failed_at + timedelta(seconds=wait), f"retry {attempt} of {count} after {wait:g}s")
