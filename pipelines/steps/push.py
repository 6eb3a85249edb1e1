"""The push step: copy objects from storage to an AI/ML platform.

`python -m pipelines.steps.push spec.json result.json`, with `inputs.sources` (URIs; a trailing `/` means every
object under it) and `parameters` `destination` (a struct with `kind`, credentials as secret references),
`select` (a JSON pointer applied to each JSON document), `overwrite` and `run_key`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import BinaryIO, Protocol, runtime_checkable

from pipelines.steps import pointer
from pipelines.steps.checksums import HashingReader, of_bytes
from pipelines.steps.contract import StepContext, StepResult, StepSpec, main
from pipelines.steps.destinations import (
    Destination,
    Factory,
    Presence,
    Receipt,
    check_read,
    default_factories,
    destination_for,
)
from pipelines.steps.errors import StepError
from pipelines.steps.objects import (
    CHUNK,
    ObjectStore,
    SourceObject,
    default_stores,
    resuming,
    store_for,
)
from relay.policy import PUSH

Opener = Callable[[], BinaryIO]
MAX_SELECT_BYTES = 256 * 1024 * 1024  # a JSON document is parsed whole; anything larger is no document to select from


@runtime_checkable
class ServerSideCopy(Protocol):
    """A destination that can copy an object from its own service without the bytes passing through the step."""

    def rewrite(self, item: SourceObject, *, overwrite: bool) -> Receipt | None:
        """The receipt of the copy; None when the item is not in that service (it is then streamed)."""
        ...


def push(
    spec: StepSpec,
    context: StepContext,
    *,
    stores: Mapping[str, ObjectStore] | None = None,
    factories: Mapping[str, Factory] | None = None,
) -> StepResult:
    sources = spec.inputs.get("sources")
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise StepError(400, f"inputs.sources: expected one or more URIs, found {sources!r}")
    parameters = spec.parameters
    config = parameters.get("destination")
    if not isinstance(config, Mapping):
        raise StepError(400, f"parameters.destination: expected a struct with a kind, found {config!r}")
    select = str(parameters.get("select") or "")
    overwrite = parameters.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise StepError(400, f"parameters.overwrite: expected true or false, found {overwrite!r}")
    run_key = str(parameters.get("run_key") or "push")
    # The policy first: nothing is resolved, listed or sent before it allows the whole request.
    permit = context.gate.admit(PUSH, {**parameters, "sources": sources})
    allowed = {where: ref for where, ref in spec.secrets.items() if permit.bound.get(where) == ref}
    destination = destination_for(
        context.resolve(config, allowed), factories or default_factories(egress=permit.egress)
    )
    # Local files are opened beneath the tenant's own folders only, and never through a link.
    stores = stores or default_stores(permit.tenant.sources if permit.tenant else None)

    started = time.monotonic()
    receipts: list[Receipt] = []
    failures: list[StepError] = []
    budget = _Budget(permit.limits.objects, permit.limits.bytes)
    for uri in sources:
        # One source or object failing never stops the others: their receipts are what a re-run builds on.
        try:
            store = store_for(uri, stores)
        except StepError as error:
            failures.append(error)
            continue
        for item in _listed(store, uri):
            if isinstance(item, StepError):  # a missing source, a store that does not answer
                failures.append(item)
                break
            refused = budget.take(item)
            if refused:
                failures.append(refused)
                break
            try:
                if item.uri.startswith("file:"):
                    # The path as listed, which is where the file is: its open follows no link (FileObjects).
                    context.gate.check_location(permit.tenant, item.uri, item.uri, key="sources")
                receipts.append(_push_one(item, _opener(store, item), destination, select, overwrite))
            except Exception as error:  # the destination's or the store's own errors included
                failures.append(_as_step_error(item.uri, error))
        if budget.spent:
            break
    try:
        message = f"Relay push {run_key}: {len(receipts)} object(s)"
        final = {r.source: r for r in destination.close(message, failed=len(failures))}
    except StepError as failure:
        failures.append(failure)
        final = {}
    receipts = [final.get(r.source, r) for r in receipts]
    delivered = [r for r in receipts if not r.pending]  # what a failed batch publish never delivered is left out
    seconds = max(time.monotonic() - started, 1e-9)
    sent = sum(r.bytes for r in delivered if not r.skipped)
    metrics = {
        "files": len(delivered),
        "skipped": sum(r.skipped for r in delivered),
        "failed": len(failures),
        "bytes": sent,
        "seconds": round(seconds, 3),
        "mb_per_s": round(sent / 1e6 / seconds, 3),
    }
    outputs = {"receipts": [r.to_json() for r in receipts]}
    if not failures and not delivered:
        return StepResult(message=f"nothing to push: no objects at {', '.join(sources)}", status=404, metrics=metrics)
    message = _summary(metrics, failures)
    status = max((f.status for f in failures), default=200)
    return StepResult(message=message, status=status, outputs=outputs, metrics=metrics)


def _summary(metrics: Mapping[str, float], failures: list[StepError]) -> str:
    """What was sent, what was already there, and what was refused (4xx) or failed on the way (5xx), and why."""
    sent, skipped = int(metrics["files"] - metrics["skipped"]), int(metrics["skipped"])
    parts = [f"sent {sent} object(s) ({int(metrics['bytes'])} bytes)"]
    if skipped:
        parts.append(f"skipped {skipped} already there")
    refused = sum(f.status < 500 for f in failures)
    if refused:
        parts.append(f"{refused} refused")
    if len(failures) - refused:
        parts.append(f"{len(failures) - refused} failed")
    message = ", ".join(parts)
    if failures:
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        message += ": " + "; ".join(str(f) for f in failures[:5]) + more
    return message


class _Budget:
    """The policy's ceilings on one push: objects and bytes, counted before each object is sent."""

    def __init__(self, objects: int, size: int) -> None:
        self._objects, self._bytes = objects, size
        self.taken, self.size, self.spent = 0, 0, False

    def take(self, item: SourceObject) -> StepError | None:
        if self.taken + 1 > self._objects or self.size + item.size > self._bytes:
            self.spent = True
            return StepError(
                413,
                f"{item.uri}: a push may send at most {self._objects} object(s) and {self._bytes} bytes (policy "
                f"limits); {self.taken} object(s) and {self.size} bytes came before it; it and the rest were not sent",
            )
        self.taken, self.size = self.taken + 1, self.size + item.size
        return None


def _listed(store: ObjectStore, uri: str) -> Iterator[SourceObject | StepError]:
    """The objects at `uri` as the store lists them (never held whole), then the listing's failure, if any."""
    try:
        yield from store.list(uri)
    except Exception as error:
        yield _as_step_error(uri, error)


def _as_step_error(uri: str, error: Exception) -> StepError:
    if isinstance(error, StepError):
        return error
    return StepError(502, f"{uri}: {type(error).__name__}: {error}")


def _opener(store: ObjectStore, item: SourceObject) -> Opener:
    # Read again from where a cut connection left off, and seekable: a resumed upload goes back to what it kept.
    return lambda: resuming(store, item)


def _push_one(
    item: SourceObject, open_source: Opener, destination: Destination, select: str, overwrite: bool
) -> Receipt:
    if select:
        data = _selected(item, open_source, select)
        item = replace(item, size=len(data), checksums=of_bytes(data), content_type="application/json")
        open_source = lambda: io.BytesIO(data)  # noqa: E731 - the selected document, already in memory
    elif item.checksums.crc32c is None and item.checksums.md5 is None:
        # The store states no checksum (a local file): one pass to learn it, so a re-run can skip the object.
        with _hashed(open_source) as reader:
            while reader.read(CHUNK):
                pass
        item = replace(item, checksums=reader.checksums)
    presence = destination.check(item, item.checksums)
    if presence is Presence.SAME:
        return Receipt(item.uri, "", 0, item.checksums.describe(), skipped=True)
    if presence is Presence.DIFFERENT and not overwrite:
        raise StepError(409, f"{item.uri}: a different {item.name} is at the destination; set overwrite to replace it")
    if not select and isinstance(destination, ServerSideCopy):
        # Both ends in one service and the bytes unchanged: it copies them itself, checksums carried and checked.
        copied = destination.rewrite(item, overwrite=overwrite)
        if copied is not None:
            return copied
    with _hashed(open_source) as reader:
        receipt = destination.send(item, reader, overwrite=overwrite)
    check_read(item, reader)
    return receipt


def _selected(item: SourceObject, open_source: Opener, select: str) -> bytes:
    if item.size > MAX_SELECT_BYTES:
        raise StepError(413, f"{item.uri}: select reads whole documents, at most {MAX_SELECT_BYTES} bytes; {item.size}")
    with _hashed(open_source) as reader:
        raw = reader.read()
    check_read(item, reader)
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise StepError(422, f"{item.uri}: select {select} needs a JSON document: {exc}") from exc
    try:
        return json.dumps(pointer.resolve(document, select), indent=2).encode()
    except pointer.PointerError as exc:
        raise StepError(422, f"{item.uri}: {exc}") from exc


@contextmanager
def _hashed(open_source: Opener) -> Iterator[HashingReader]:
    with open_source() as raw:
        yield HashingReader(raw)


if __name__ == "__main__":
    raise SystemExit(main(push))
