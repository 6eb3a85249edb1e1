"""What a subcommand is: its help texts, its arguments, and what it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from relaycli.config import Context


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # one line, listed by `relay --help`
    description: str  # heads `relay NAME --help`
    examples: str  # the epilog of `relay NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Context], int]


def run_count(text: str) -> int:
    """An argparse type for a number of runs (`--limit N`): a whole number, 1 or more, in ASCII digits."""
    value = int(text) if text.isascii() and text.isdecimal() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of runs, 1 or more, found {text!r}")
    return value


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


def add_catalog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        metavar="URI",
        help="folder or gs:// prefix of compiled specs <name>.yaml "
        "(default: RELAY_CATALOG_URI, else pipelines/compiled)",
    )


def add_results(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results", metavar="URI", help="gs://bucket/prefix or folder of run records (default: RELAY_RESULTS_URI)"
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("json", "yaml"), help="decode FILE as this (default: from its suffix .json, .yaml, .yml)"
    )


def add_no_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="send FILE as it is, without checking it against the catalog first",
    )


def add_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="URI",
        help="the deployment policy: a file or gs:// object (default: RELAY_POLICY_URI, else the catalog's "
        "policy.yaml if it has one, as the functions read it)",
    )
