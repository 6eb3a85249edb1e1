"""`relay publish FILE --topic T`: publish a trigger document as the body of a message on the trigger topic."""

from __future__ import annotations

import argparse
import secrets
from datetime import UTC, datetime

from relay import actions, naming
from relay.events import NONCE_ATTRIBUTE, EventInfo
from relay.service import parse_document
from relaycli import policy, pubsub
from relaycli.command import Command, add_catalog, add_format, add_json, add_no_validate, add_policy
from relaycli.config import Context
from relaycli.documents import checked_before_sending, read_trigger_file
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, UsageError
from relaycli.output import pairs, to_json

# Set here, from --format and for the run key: one given by hand would make the printed run key wrong.
_OWN = ("format", NONCE_ATTRIBUTE)
# What makes a message a storage notification, which names an object instead of carrying a document.
_NOTIFICATION = ("payloadFormat", "bucketId", "objectId", "objectGeneration", "eventType")
# Pub/Sub's limits (a key of at most 256 bytes, a value of 1024, no `goog` prefix; 100 attributes).
_MAX_KEY, _MAX_VALUE, _MAX_ATTRIBUTES = 256, 1024, 100


def _attribute(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (action=cancel), found {text!r}")
    if len(key.encode()) > _MAX_KEY or len(value.encode()) > _MAX_VALUE or key.lower().startswith("goog"):
        raise argparse.ArgumentTypeError(
            f"expected a key of at most {_MAX_KEY} bytes not starting with goog and a value of at most "
            f"{_MAX_VALUE} bytes, as Pub/Sub takes them, found {text!r}"
        )
    return key, value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="trigger document (.json, .yaml or .yml); left out with --attribute action=...",
    )
    parser.add_argument("--topic", required=True, metavar="T", help="trigger topic: a name, or projects/P/topics/T")
    parser.add_argument(
        "--project",
        metavar="P",
        help="project of a short topic name (default: PUBSUB_PROJECT_ID with the emulator, GOOGLE_CLOUD_PROJECT, "
        "then Application Default Credentials' project)",
    )
    parser.add_argument(
        "--attribute",
        dest="attributes",
        action="append",
        type=_attribute,
        default=[],
        metavar="KEY=VALUE",
        help="a message attribute (repeatable); action=cancel or action=rerun with run_key=KEY (force=true) "
        "asks for that instead of carrying a trigger",
    )
    add_format(parser)
    add_no_validate(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    topic = pubsub.topic_path(args.topic, args.project, context.env)
    extra = _attributes(args.attributes)
    if "action" in extra:
        return _request(args, context, topic, extra)
    if args.file is None:
        raise UsageError("FILE: expected a trigger document to publish (or --attribute action=cancel|rerun)")
    config = context.config(catalog=args.catalog, policy=args.policy)
    document = read_trigger_file(args.file, args.format)
    origin = policy.Origin(topic, topic=True)
    deployed = checked_before_sending(context, config, document, origin, "published", validated=args.validate)
    # Every message carries an attribute: the emulator's push turns only those into CloudEvents.
    check_emulator(context.env, "PUBSUB_EMULATOR_HOST")
    # The nonce makes the run key known here: the publish time, which Relay takes in its place, is not.
    nonce = secrets.token_hex(8)
    attributes = {**extra, "format": document.format, NONCE_ATTRIBUTE: nonce}
    message_id = pubsub.publish(topic, document.data, attributes, context.env)
    identity = naming.message_identity(topic, message_id, nonce)
    parsed = parse_document(document.data, document.format, f"{topic}#{message_id}")
    run_key = policy.run_key(deployed, origin, parsed, identity)
    if args.json:
        print(to_json({"topic": topic, "message_id": message_id, "run_key": run_key}))
    else:
        print(pairs([("published", topic), ("message id", message_id), ("run key", run_key)]))
        print(context.paint.next(f"\nfollow it: relay status {run_key}"))
    return EXIT_OK


def _attributes(given: list[tuple[str, str]]) -> dict[str, str]:
    attributes = dict(given)
    if len(given) > _MAX_ATTRIBUTES - len(_OWN):
        raise UsageError(f"--attribute: expected at most {_MAX_ATTRIBUTES - len(_OWN)}, found {len(given)}")
    if len(attributes) < len(given):
        repeated = sorted({key for key, _ in given if [k for k, _ in given].count(key) > 1})
        raise UsageError(f"--attribute: expected each key once, found {', '.join(repeated)} more than once")
    own = [key for key in attributes if key in _OWN]
    if own:
        raise UsageError(f"--attribute: expected none of {', '.join(_OWN)} (set here: use --format), found {own[0]}")
    notification = [key for key in attributes if key in _NOTIFICATION]
    if notification:
        raise UsageError(
            f"--attribute: expected none of {', '.join(_NOTIFICATION)} (they make the message a storage "
            f"notification, which Relay reads as naming an object), found {notification[0]}"
        )
    return attributes


def _request(args: argparse.Namespace, context: Context, topic: str, attributes: dict[str, str]) -> int:
    """A cancel or rerun asked on the trigger topic: checked as the function reads it; its data is ignored."""
    now = datetime.now(UTC)
    asked = actions.action_request(EventInfo("", "", "", now), topic, {"attributes": attributes})
    if isinstance(asked, str) or asked is None:
        raise UsageError(f"--attribute: {asked}")
    data = read_trigger_file(args.file, args.format or "json").data if args.file else b""
    check_emulator(context.env, "PUBSUB_EMULATOR_HOST")
    message_id = pubsub.publish(topic, data, attributes, context.env)
    if args.json:
        print(to_json({"topic": topic, "message_id": message_id, "action": asked.action, "run_key": asked.run_key}))
    else:
        print(pairs([("published", topic), ("message id", message_id), ("action", f"{asked.action} {asked.run_key}")]))
        print(context.paint.next(f"\nfollow it: relay status {asked.run_key}"))
    return EXIT_OK


COMMAND = Command(
    name="publish",
    summary="publish a trigger document on a Pub/Sub topic and print its run key",
    description=(
        "Publish a trigger document (JSON, or YAML with the attribute format=yaml) as the body of one message "
        "on the trigger topic, with a random nonce attribute, and print the message id and the run key Relay "
        "gives it (its run_key, or <pipeline>-<digest of topic, message id and nonce>; a run_key is scoped "
        "<tenant>--<run_key> by the policy's tenant for the topic). The document is first checked as "
        "'relay validate FILE --topic T' does, catalog and policy: an invalid one is not published "
        "(exit status 1, as from relay validate). --attribute adds attributes; with action=cancel or action=rerun "
        "and run_key=KEY the message asks for that (as the function reads it, FILE optional and ignored). "
        "Pub/Sub is PUBSUB_EMULATOR_HOST's emulator "
        "when set, else the real service with Application Default Credentials."
    ),
    examples="""\
examples:
  relay publish trigger.json --topic relay-triggers --project relay-local
  relay publish trigger.yaml --topic projects/lab-prod/topics/relay-triggers
  relay publish body.txt --format yaml --topic relay-triggers --json
  relay publish trigger.json --topic relay-triggers --attribute team=assay
  relay publish --topic relay-triggers --attribute action=cancel --attribute run_key=lab--nightly-2026-11-21""",
    add_arguments=_arguments,
    run=_run,
)
