"""The local stack's deployment policy: devstack/policy.yaml, made for this clone and checked before any use.

The policy names the ratchet example's folder as a file:// code origin, and a committed file cannot know where
the clone is; so the template's `${ratchet_example}` becomes that folder's URI, and the result is written into the
stack's own working folder, which RELAY_POLICY_URI then names.
"""

from __future__ import annotations

import string
from pathlib import Path

from relay.policy import Policy, parse_policy

TEMPLATE = Path(__file__).with_name("policy.yaml")
RATCHET_EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "examples" / "ratchet"


def render(template: Path = TEMPLATE, ratchet_example: Path = RATCHET_EXAMPLE) -> str:
    """The template's text for this clone: the example folder as the URI a trigger names it by, plus '/'.

    `as_uri` escapes what YAML or a URI could misread (spaces, quotes), exactly as the demo's workflow URI is
    escaped, so the two compare equal.
    """
    uri = ratchet_example.resolve().as_uri().rstrip("/") + "/"
    return string.Template(template.read_text()).substitute(ratchet_example=uri)


def write_policy(folder: Path, template: Path = TEMPLATE) -> tuple[Path, Policy]:
    """Write the rendered policy into `folder`; PolicyError, naming every problem, if it does not parse."""
    text = render(template)
    path = folder / "policy.yaml"
    policy = parse_policy(text, str(path))  # before the stack starts, not at its first trigger
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, policy
