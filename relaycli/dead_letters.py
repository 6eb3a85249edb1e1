"""`relay dead-letters list | replay`: the events Pub/Sub gave up on, seen and sent back to the trigger topic.

deploy.sh forwards an event to the dead-letter topic after 15 failed deliveries, where a subscription keeps it
for a week. `list` pulls and releases at once, so nothing is consumed; `replay` republishes each chosen message to
the trigger topic with its data and original attributes, and acknowledges one only once Pub/Sub has accepted its
copy: a message whose replay failed stays in the dead-letter subscription.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relaycli import pubsub
from relaycli.command import Command, add_json
from relaycli.config import Context
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import one_line, table, to_json, truncate

DEAD_LETTER = "relay-dead-letter"  # deploy.sh's subscription (and topic) with the default --prefix relay
TRIGGERS = "relay-triggers"
# Pub/Sub adds these when it forwards a message to the dead-letter topic; they were not the sender's.
ADDED_PREFIX = "CloudPubSubDeadLetter"
PULL_BATCH = 100
# A pull on an empty subscription waits out its deadline: a short one ends the listing soon once all is pulled,
# and the pull is tried again within it if the service is briefly unavailable.
PULL_TIMEOUT = 2.0
# Held while a command works through the messages, so none is redelivered to it (and shown twice) meanwhile.
LEASE_SECONDS = 120


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    ack_id: str
    data: bytes
    attributes: Mapping[str, str]
    published: datetime | None

    @property
    def original_attributes(self) -> dict[str, str]:
        return {k: v for k, v in self.attributes.items() if not k.startswith(ADDED_PREFIX)}

    @property
    def attempts(self) -> str:
        return self.attributes.get(f"{ADDED_PREFIX}SourceDeliveryCount", "-")

    def describe(self) -> str:
        """What the event was about: the object a notification names, a trigger_uri, or an inline document."""
        a = self.attributes
        if "bucketId" in a:
            return f"gs://{a['bucketId']}/{a.get('objectId', '')}#{a.get('objectGeneration', '')}"
        if "trigger_uri" in a:
            return a["trigger_uri"]
        return f"inline {a.get('format', 'json')}: {truncate(one_line(self.data.decode('utf-8', 'replace')), 60)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "published": self.published.isoformat() if self.published else None,
            "attributes": dict(self.attributes),
            "data": base64.b64encode(self.data).decode(),
            "about": self.describe(),
        }


def _arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="show the dead letters, consuming none")
    replay = actions.add_parser("replay", help="republish dead letters to the trigger topic, then acknowledge them")
    replay.add_argument("ids", metavar="ID", nargs="*", help="message ids, as 'list' shows them")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.add_argument(
        "--topic", default=TRIGGERS, metavar="T", help=f"the trigger topic (default {TRIGGERS}): a name or a path"
    )
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="show at most N (default 100)")
    for sub in (listing, replay):
        sub.add_argument(
            "--subscription",
            default=DEAD_LETTER,
            metavar="S",
            help=f"the dead-letter subscription (default {DEAD_LETTER}): a name or projects/P/subscriptions/S",
        )
        sub.add_argument("--project", metavar="P", help="project of short names (as 'relay publish')")
        add_json(sub)


def _run(args: argparse.Namespace, context: Context) -> int:
    subscription = pubsub.subscription_path(args.subscription, args.project, context.env)
    check_emulator(context.env, "PUBSUB_EMULATOR_HOST")
    if args.action == "list":
        return _list(args, context, subscription)
    if args.all == bool(args.ids):
        raise UsageError(
            "replay: expected message ids or --all (one of them), found " + ("both" if args.all else "neither")
        )
    return _replay(args, context, subscription)


def peek(env: Mapping[str, str], subscription: str, limit: int | None) -> list[DeadLetter]:
    """The dead letters in `subscription` (at most `limit`), each given back at once: none is consumed."""
    with _subscriber(env) as client:
        letters = _pull_all(client, subscription, limit)
        _release(client, subscription, letters)
    return letters


def _list(args: argparse.Namespace, context: Context, subscription: str) -> int:
    letters = peek(context.env, subscription, args.limit)
    if args.json:
        print(to_json([letter.to_json() for letter in letters]))
    elif not letters:
        print(f"no dead letters in {subscription}")
    else:
        rows = [
            [letter.message_id, letter.published.isoformat() if letter.published else "-", letter.attempts,
             letter.describe()]
            for letter in letters
        ]  # fmt: skip
        print(table(["ID", "PUBLISHED", "ATTEMPTS", "EVENT"], rows))
    return EXIT_OK


def _replay(args: argparse.Namespace, context: Context, subscription: str) -> int:
    topic = pubsub.topic_path(args.topic, args.project, context.env)
    wanted = set(args.ids)
    replayed: list[str] = []
    failed: list[str] = []
    with _subscriber(context.env) as client:
        letters = _pull_all(client, subscription, None)
        chosen = [letter for letter in letters if args.all or letter.message_id in wanted]
        done = []
        for letter in chosen:
            try:
                new_id = pubsub.publish(topic, letter.data, letter.original_attributes, context.env)
            except CliError as error:
                failed.append(f"{letter.message_id}: {error}")
                continue
            done.append(letter)
            replayed.append(f"{letter.message_id} -> {new_id}")
        if done:
            client.acknowledge(subscription=subscription, ack_ids=[letter.ack_id for letter in done])
        _release(client, subscription, [letter for letter in letters if letter not in done])
    missing = sorted(wanted - {letter.message_id for letter in letters})
    if args.json:
        print(to_json({"topic": topic, "replayed": replayed, "failed": failed, "not_found": missing}))
    else:
        print(f"replayed {len(replayed)} to {topic}" + "".join(f"\n  {line}" for line in replayed))
    if failed or missing:
        details = [f"  failed {line}" for line in failed] + [f"  not found: {m}" for m in missing]
        raise CliError(f"{subscription}: {len(failed)} failed, {len(missing)} not found", details)
    return EXIT_OK


@contextmanager
def _subscriber(env: Mapping[str, str]) -> Iterator[Any]:
    from google.auth.exceptions import GoogleAuthError

    emulator = env.get("PUBSUB_EMULATOR_HOST", "").strip()
    try:
        if emulator:
            # devstack's client keeps loopback traffic off any http_proxy and speaks plain gRPC to the emulator.
            from devstack.pubsub import subscriber_client

            client = subscriber_client(emulator)
        else:
            from google.cloud import pubsub_v1

            client = pubsub_v1.SubscriberClient()
    except GoogleAuthError as exc:
        raise UsageError(f"Pub/Sub credentials: expected Application Default Credentials, found none: {exc}") from None
    from google.api_core import exceptions

    try:
        with client:
            yield client
    except exceptions.NotFound as exc:
        raise CliError(f"expected an existing subscription, found none: {one_line(exc.message)}") from None
    except exceptions.GoogleAPIError as exc:
        raise CliError(f"Pub/Sub: {one_line(exc) or type(exc).__name__}") from None


def _pull_all(client: Any, subscription: str, limit: int | None) -> list[DeadLetter]:
    """Pull until the subscription gives nothing more (or `limit`), holding every message pulled."""
    from google.api_core.exceptions import DeadlineExceeded
    from google.api_core.retry import Retry

    letters: dict[str, DeadLetter] = {}
    while limit is None or len(letters) < limit:
        batch = PULL_BATCH if limit is None else min(PULL_BATCH, limit - len(letters))
        try:
            response = client.pull(
                subscription=subscription, max_messages=batch, timeout=PULL_TIMEOUT, retry=Retry(timeout=PULL_TIMEOUT)
            )
        except DeadlineExceeded:
            break  # nothing came within the deadline: all there is has been pulled
        received = list(response.received_messages)
        if not received:
            break
        client.modify_ack_deadline(
            subscription=subscription, ack_ids=[r.ack_id for r in received], ack_deadline_seconds=LEASE_SECONDS
        )
        for item in received:
            message = item.message
            published = message.publish_time
            letters.setdefault(
                message.message_id,
                DeadLetter(
                    message_id=message.message_id,
                    ack_id=item.ack_id,
                    data=bytes(message.data),
                    attributes=dict(message.attributes),
                    published=published if isinstance(published, datetime) else None,
                ),
            )
    return sorted(
        letters.values(), key=lambda letter: (letter.published is None, letter.published or 0, letter.message_id)
    )


def _release(client: Any, subscription: str, letters: Sequence[DeadLetter]) -> None:
    """Give messages back at once (a deadline of 0), so the next list or replay sees them."""
    if letters:
        client.modify_ack_deadline(
            subscription=subscription, ack_ids=[letter.ack_id for letter in letters], ack_deadline_seconds=0
        )


COMMAND = Command(
    name="dead-letters",
    summary="list dead letters, replay them to the trigger topic",
    description=(
        "The deployment's dead-letter subscription (deploy.sh: relay-dead-letter) keeps for a week the events "
        "the functions failed 15 times. 'list' shows them (id, when, delivery attempts, the object or trigger "
        "they were about) and consumes none. 'replay ID... | --all' republishes each to the trigger topic with "
        "its data and original attributes (those Pub/Sub added on forwarding left out) and acknowledges only "
        "those Pub/Sub accepted; the rest stay. Exactly-once still holds: a replayed event that already launched "
        "is a duplicate. Under 'make up' the emulator has the same subscription (PUBSUB_EMULATOR_HOST). "
        "Exit status 0 when everything asked for was replayed, 1 when any failed or was not found."
    ),
    examples="""\
examples:
  relay dead-letters list
  relay dead-letters replay 4921061845123456 4921061845123457
  relay dead-letters replay --all --topic projects/lab-prod/topics/relay-triggers
  relay dead-letters list --subscription projects/lab-prod/subscriptions/relay-dead-letter --json""",
    add_arguments=_arguments,
    run=_run,
)
