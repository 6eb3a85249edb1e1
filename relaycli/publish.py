"""`relay publish FILE --topic T`: publish a trigger document as the body of a message on the trigger topic."""

from __future__ import annotations

import argparse
import secrets

from relay import naming
from relay.events import NONCE_ATTRIBUTE
from relay.service import parse_document
from relaycli import policy, pubsub
from relaycli.command import Command, add_catalog, add_format, add_json, add_no_validate, add_policy
from relaycli.config import Context
from relaycli.documents import problem_lines, read_trigger_file, validate
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, CliError
from relaycli.output import pairs, to_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="trigger document (.json, .yaml or .yml)")
    parser.add_argument("--topic", required=True, metavar="T", help="trigger topic: a name, or projects/P/topics/T")
    parser.add_argument(
        "--project",
        metavar="P",
        help="project of a short topic name (default: PUBSUB_PROJECT_ID with the emulator, GOOGLE_CLOUD_PROJECT, "
        "then Application Default Credentials' project)",
    )
    add_format(parser)
    add_no_validate(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    topic = pubsub.topic_path(args.topic, args.project, context.env)
    config = context.config(catalog=args.catalog, policy=args.policy)
    document = read_trigger_file(args.file, args.format)
    origin = policy.Origin(topic, topic=True)
    # Read before anything is sent: it decides the run key, and a policy that cannot be read stops the functions too.
    deployed = policy.load_policy(context, config)
    if args.validate:
        catalog = config.require_catalog()
        check = policy.PolicyCheck(deployed, origin, policy.decision_context(config))
        validation = validate(document, context.blob_store(config, catalog), catalog, check)
        if not validation.valid:
            raise CliError(
                f"{args.file}: not published: {validation.summary()}", problem_lines(validation, context.paint_errors)
            )
    # Every message carries an attribute: the emulator's push turns only those into CloudEvents.
    check_emulator(context.env, "PUBSUB_EMULATOR_HOST")
    # The nonce makes the run key known here: the publish time, which Relay takes in its place, is not.
    nonce = secrets.token_hex(8)
    attributes = {"format": document.format, NONCE_ATTRIBUTE: nonce}
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


COMMAND = Command(
    name="publish",
    summary="publish a trigger document on a Pub/Sub topic and print its run key",
    description=(
        "Publish a trigger document (JSON, or YAML with the attribute format=yaml) as the body of one message "
        "on the trigger topic, with a random nonce attribute, and print the message id and the run key Relay "
        "gives it (its run_key, or <pipeline>-<digest of topic, message id and nonce>; a run_key is scoped "
        "<tenant>--<run_key> by the policy's tenant for the topic). The document is first checked as "
        "'relay validate FILE --topic T' does, catalog and policy: an invalid one is not published "
        "(exit status 1, as from relay validate). Pub/Sub is PUBSUB_EMULATOR_HOST's emulator "
        "when set, else the real service with Application Default Credentials."
    ),
    examples="""\
examples:
  relay publish trigger.json --topic relay-triggers --project relay-local
  relay publish trigger.yaml --topic projects/lab-prod/topics/relay-triggers
  relay publish body.txt --format yaml --topic relay-triggers --json""",
    add_arguments=_arguments,
    run=_run,
)
