"""Relay's metrics and alerts as files the deploy hands to gcloud, rendered from infra/monitoring/*.yaml.

infra/monitoring/metrics.yaml and alerts.yaml are the one definition; infra/terraform reads the same files
(`templatefile` + `yamldecode`, monitoring.tf) and infra/deploy.sh runs this to write one LogMetric file per metric
(`gcloud logging metrics create --config-from-file`) and one AlertPolicy file per alert (`gcloud alpha monitoring
policies create --policy-from-file`), with the notification channels the operator named. `${name}` placeholders
are filled as Terraform's templatefile fills them; this refuses any other template syntax, and any name it is not
given or is given and not used, so that the two cannot read one file apart.

    python -m relaycli.monitoring --prefix relay --channel projects/P/notificationChannels/1 --out DIR

It prints one line per file, `metric|alert <TAB> FILE <TAB> NAME`; with --list-only it writes none (a dry run
without a staging folder, a teardown: the names are all they need).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFINITIONS = Path(__file__).resolve().parents[1] / "infra" / "monitoring"
DEFAULT_REJECTIONS_PER_5M = 10
DEFAULT_FAILURES_IN_A_ROW = 3
CHANNEL = re.compile(r"projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/notificationChannels/[0-9]+")
_PLACEHOLDER = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


class MonitoringError(ValueError):
    """A definition that does not render, or a setting it cannot take."""


def values_for(
    prefix: str,
    *,
    rejections_per_5m: int = DEFAULT_REJECTIONS_PER_5M,
    failures_in_a_row: int = DEFAULT_FAILURES_IN_A_ROW,
) -> dict[str, str]:
    """What the definitions' placeholders stand for in a deployment of `prefix` (deploy.sh names its dead-letter
    subscription PREFIX-dead-letter, as infra/terraform does)."""
    if rejections_per_5m < 1 or failures_in_a_row < 2:
        raise MonitoringError(
            "expected rejections per 5 minutes of at least 1 and failures in a row of at least 2, found "
            f"{rejections_per_5m} and {failures_in_a_row}"
        )
    return {
        "prefix": prefix,
        "dead_letter_subscription": f"{prefix}-dead-letter",
        "rejections_per_5m": str(rejections_per_5m),
        "failures_in_a_row": str(failures_in_a_row),
    }


def render(text: str, values: Mapping[str, str], where: str) -> Any:
    """`text` with its `${name}` placeholders filled, read as YAML."""
    used = set(_PLACEHOLDER.findall(text))
    if missing := used - set(values):
        raise MonitoringError(f"{where}: expected placeholders among {sorted(values)}, found {sorted(missing)}")
    if unused := set(values) - used:
        raise MonitoringError(f"{where}: expected every value to be used, found {sorted(unused)} unused")
    filled = _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
    if "${" in filled or "%{" in filled:
        raise MonitoringError(f"{where}: expected only ${{name}} placeholders, found other template syntax")
    return yaml.safe_load(filled)


def metrics(values: Mapping[str, str], folder: Path = DEFINITIONS) -> list[dict[str, Any]]:
    path = folder / "metrics.yaml"
    # The metrics use only the prefix: the rest of the values are the alerts'.
    return list(render(path.read_text(), {"prefix": values["prefix"]}, str(path)))


def alerts(values: Mapping[str, str], channels: Sequence[str], folder: Path = DEFINITIONS) -> list[dict[str, Any]]:
    path = folder / "alerts.yaml"
    for channel in channels:
        if not CHANNEL.fullmatch(channel):
            raise MonitoringError(f"expected a channel as projects/PROJECT/notificationChannels/ID, found {channel!r}")
    return [
        {**policy, "notificationChannels": list(channels)} for policy in render(path.read_text(), values, str(path))
    ]


def files(out: str, values: Mapping[str, str], channels: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, path under `out`, body) of each file: OUT/metrics/NAME.json per metric, OUT/alerts/N.json per alert."""
    found = [("metric", f"{out}/metrics/{m['name']}.json", m) for m in metrics(values)]
    found += [("alert", f"{out}/alerts/{n}.json", a) for n, a in enumerate(alerts(values, channels), start=1)]
    return found


def index_line(kind: str, path: str, body: Mapping[str, Any]) -> str:
    """What deploy.sh reads: kind, file, and the name it is found by (a metric's name, a policy's display name:
    the API names a policy itself)."""
    return f"{kind}\t{path}\t{body['name'] if kind == 'metric' else body['displayName']}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relaycli.monitoring", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--channel", action="append", default=[], help="a notification channel (repeatable)")
    parser.add_argument("--rejections-per-5m", type=int, default=DEFAULT_REJECTIONS_PER_5M)
    parser.add_argument("--failures-in-a-row", type=int, default=DEFAULT_FAILURES_IN_A_ROW)
    parser.add_argument("--out", required=True, help="the folder to write to (or only name, with --list-only)")
    parser.add_argument("--list-only", action="store_true", help="write nothing: only print the index")
    args = parser.parse_args(argv)
    try:
        values = values_for(
            args.prefix, rejections_per_5m=args.rejections_per_5m, failures_in_a_row=args.failures_in_a_row
        )
        rendered = files(args.out.rstrip("/"), values, [c for c in args.channel if c])
    except MonitoringError as error:
        print(f"relaycli.monitoring: {error}", file=sys.stderr)
        return 2
    for kind, path, body in rendered:
        if not args.list_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(body, indent=2) + "\n")
        print(index_line(kind, path, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
