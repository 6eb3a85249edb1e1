"""`relay validate FILE`: the checks Relay runs on a trigger before it claims a run, and nothing else.

`relay validate --policy FILE` alone checks a policy file instead, listing every problem in it.
"""

from __future__ import annotations

import argparse
import shlex

from relay import naming
from relay.policy import PolicyError, parse_policy
from relaycli import policy, pubsub, routes
from relaycli.command import Command, add_catalog, add_format, add_json, add_policy
from relaycli.config import CliConfig, Context
from relaycli.documents import problem_lines, read_trigger_file, validate
from relaycli.errors import EXIT_FAILED, EXIT_OK, UsageError
from relaycli.output import plural, to_json
from relaycli.trigger import object_uri


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", nargs="?", help="trigger document (.json, .yaml or .yml); leave out with --policy"
    )
    origin = parser.add_mutually_exclusive_group()
    origin.add_argument("--bucket", metavar="B", help="check it as a trigger file uploaded to this bucket")
    origin.add_argument(
        "--topic",
        metavar="T",
        help="check it as a message on this topic (a name, or projects/P/topics/T); with --object, the topic the "
        "object's storage notification would arrive on",
    )
    parser.add_argument("--name", metavar="NAME", help="its object name in --bucket (default: FILE's name)")
    parser.add_argument("--project", metavar="P", help="project of a short --topic name (as 'relay publish')")
    add_format(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)
    routes.add_arguments(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(catalog=args.catalog, policy=args.policy)
    if args.object is not None:
        if args.file is not None or args.bucket is not None or args.name is not None:
            raise UsageError("--object: expected it without FILE, --bucket or --name: a data object is no trigger file")
        if args.project is not None and args.topic is None:
            raise UsageError("--project: expected it with --topic, the topic it is the project of")
        return routes.check_object(args, context, config)
    if args.metadata or args.content_type is not None:
        raise UsageError("--metadata, --content-type: expected them with --object, the data object they describe")
    if args.name is not None and args.bucket is None:
        raise UsageError("--name: expected it with --bucket, the bucket the object would be in")
    if args.project is not None and args.topic is None:
        raise UsageError("--project: expected it with --topic, the topic it is the project of")
    if args.file is None:
        if args.policy is None:
            raise UsageError("FILE: expected a trigger file to check (or --policy FILE alone, to check a policy)")
        if args.bucket or args.topic:
            raise UsageError("FILE: expected the trigger file that would come from --bucket or --topic, found none")
        return _validate_policy(args, context, config)
    origin = _origin(args, context)
    named = None if origin is None or origin.topic else naming.split_gs_uri(origin.uri)[1]  # decoded by its name
    document = read_trigger_file(args.file, args.format, named=named)
    catalog = config.require_catalog()
    check = None
    if origin is not None:  # only where it comes from decides its tenant, hence the policy's verdict
        check = policy.PolicyCheck(policy.load_policy(context, config), origin, policy.decision_context(config))
    validation = validate(document, context.blob_store(config, catalog), catalog, check)
    if args.json:
        print(to_json({"file": args.file, **validation.to_json()}))
    else:
        paint = context.paint
        verdict, _, rest = validation.summary().partition(":")
        lines = [paint.state(verdict) + ":" + rest, *problem_lines(validation, paint), *validation.policy_lines()]
        if validation.valid and origin is not None:
            lines.append(paint.next(f"\nsend it: {_send_command(args, origin)}"))
        print("\n".join(lines))
    return EXIT_OK if validation.valid else EXIT_FAILED


def _send_command(args: argparse.Namespace, origin: policy.Origin) -> str:
    """The command that sends the file from where it was checked for."""
    file = shlex.quote(args.file)
    if origin.topic:
        return f"relay publish {file} --topic {shlex.quote(origin.uri)}"
    name = f" --name {shlex.quote(args.name)}" if args.name else ""
    return f"relay trigger {file} --bucket {shlex.quote(args.bucket)}{name}"


def _origin(args: argparse.Namespace, context: Context) -> policy.Origin | None:
    if args.bucket is not None:
        return policy.Origin(object_uri(args.bucket, args.name, args.file))
    if args.topic is not None:
        return policy.Origin(pubsub.topic_path(args.topic, args.project, context.env), topic=True)
    return None


def _validate_policy(args: argparse.Namespace, context: Context, config: CliConfig) -> int:
    """The policy file alone: every problem in it, as the functions would report it when they start."""
    where = config.policy_location
    raw = policy.read_policy_file(context, config)
    if raw is None:
        raise UsageError(f"--policy: expected a policy file, found none at {where}")
    try:
        tenants = [tenant.name for tenant in parse_policy(raw, where).tenants]
        problems: tuple[str, ...] = ()
    except PolicyError as error:
        tenants, problems = [], error.problems
    if args.json:
        print(to_json({"policy": where, "valid": not problems, "tenants": tenants, "problems": list(problems)}))
    elif problems:
        print("\n".join([f"invalid policy: {plural(len(problems), 'problem')}", *(f"  {p}" for p in problems)]))
    else:
        print(f"valid policy: {plural(len(tenants), 'tenant')}" + (f" ({', '.join(tenants)})" if tenants else ""))
    return EXIT_FAILED if problems else EXIT_OK


COMMAND = Command(
    name="validate",
    summary="check a trigger file against the catalog and the policy, launching nothing",
    description=(
        "Check a trigger file as Relay would before claiming a run: the document (keys, types, run_key, labels), "
        "its pipeline in the catalog, its parameters against the pipeline's inputs, and, given where it would "
        "come from (--bucket B [--name N], or --topic T), the deployment policy: the tenant that origin belongs "
        "to, everything the trigger uses beyond that tenant's rules, and the run key it would get "
        "(<tenant>--<run_key> for a run_key it chooses). The policy is read as the functions read it "
        "(--policy, else RELAY_POLICY_URI, else the catalog's policy.yaml; none at all allows nothing outside "
        "Relay), with file:// locations possible only when RELAY_BACKEND is local (its default). Every problem "
        "is listed as 'field: expected ..., found ...'. With --policy and no FILE, check the policy file itself "
        "and list every problem in it. With --object gs://bucket/name[#generation] instead of FILE, say what a "
        "storage notification of that data object arriving on --topic T would start (T defaults to the one topic the "
        "policy's notifications wire to the bucket): refused unless a tenant owns T and notifications wires the "
        "bucket to it, else that tenant's route, its parameters from the object's facts in storage (for an object "
        "not there yet, a what-if from --metadata and --content-type), the verdict and the run key. "
        "Exit status 0 when valid, 1 when not (a policy denial included)."
    ),
    examples="""\
examples:
  relay validate trigger.yaml
  relay validate trigger.yaml --bucket relay-triggers --name assay/nightly.yaml
  relay validate message.json --topic projects/lab-prod/topics/relay-triggers --policy policy.yaml
  relay validate nightly.json --catalog gs://relay-deploy/pipelines/3f2a1c0
  relay validate message.txt --format yaml --json
  relay validate --policy policy.yaml
  relay validate --object gs://lab-data/assay/x.csv --topic assay-triggers   # what a route would start
  relay validate --object gs://lab-data/assay/new.csv --metadata batch=b1    # what-if: not uploaded yet""",
    add_arguments=_arguments,
    run=_run,
)
