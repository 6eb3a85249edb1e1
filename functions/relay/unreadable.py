"""A request functions-framework could not make into an event: acknowledged, with one outcome line.

Pub/Sub push, and Eventarc, which delivers through it, take only 102, 200, 201, 202 and 204 as an acknowledgement:
a 400 or a 500 is redelivered until the subscription's dead letter takes it. A body the framework cannot read (JSON
nested past its parser's recursion limit, a number of more than 4300 digits, bytes that are not UTF-8, a shape no
conversion knows) reads no better the next time, so it is acknowledged like any other malformed event.
"""

from __future__ import annotations

from relay.outcome import Outcome
from relay.triggers import MAX_DEPTH

_SHOWN = 200  # characters of a header or an error message an outcome line carries


def raised_before(error: BaseException, filename: str) -> bool:
    """Whether `error` came up without passing through code of `filename` (the entry points' module, which logs
    what it raises as `retried` and wants the redelivery a 500 asks for)."""
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == filename:
            return False
        trace = trace.tb_next
    return True


def outcome(error: BaseException, event_id: str, source: str) -> Outcome:
    """The `skipped` line for a request the framework failed to read (with the `ce-id` and `ce-source` headers, where
    it has them): an ERROR, as no platform sends one."""
    cause = _innermost(error)
    if isinstance(cause, RecursionError):
        reason = f"expected an event of at most {MAX_DEPTH} levels of lists and mappings, found more"
    else:
        status = getattr(error, "code", None)  # werkzeug's HTTPException: its description repeats the whole body
        found = f"HTTP {status} {getattr(error, 'name', '')}" if isinstance(status, int) else _clip(_named(cause))
        reason = f"expected a CloudEvent or a Pub/Sub push that functions-framework can read, found {found}"
    return Outcome("skipped", reason, _clip(event_id), _clip(source), severity_override="ERROR")


def _innermost(error: BaseException) -> BaseException:
    # cloudevents wraps what its unmarshaller raised (DataUnmarshallerError); the cause says what was wrong.
    seen = [error]
    while len(seen) < 10:
        inner = seen[-1].__cause__ or seen[-1].__context__
        if inner is None:
            break
        seen.append(inner)
    return seen[-1]


def _named(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _clip(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _SHOWN else line[: _SHOWN - 3] + "..."
