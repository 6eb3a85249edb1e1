"""A stand-in `gcloud` for running infra/deploy.sh for real here: it records each call and keeps a small state.

Describes succeed for what exists, creates make it exist, look-ups print what the real ones would (a project
number, an Eventarc trigger and its subscription, the Cloud Storage agent, notification listings); everything else
succeeds. State and calls live in the JSON file named by FAKE_GCLOUD_STATE. Standard library only: it starts once
per call.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote, unquote

NUMBER = "123456789012"


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_GCLOUD_STATE"])
    state = json.loads(state_path.read_text()) if state_path.exists() else {"exists": [], "calls": [], "notes": []}
    state["calls"].append(argv)
    try:
        return answer(argv, state)
    finally:
        state_path.write_text(json.dumps(state))


def flag(argv: list[str], name: str) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), "")


def answer(argv: list[str], state: dict[str, list]) -> int:
    words = [a for a in argv if not a.startswith("--")]
    project = flag(argv, "project") or (words[2] if words[:1] == ["projects"] else "")
    exists = state["exists"]
    if words[:2] == ["projects", "describe"]:
        print(NUMBER)
    elif words[:2] == ["storage", "service-agent"]:
        print(f"service-{NUMBER}@gs-project-accounts.iam.gserviceaccount.com")
    elif words[:2] == ["functions", "describe"]:
        if f"function {words[2]}" not in exists:
            return _missing(words[2])
        if "--format=none" not in argv:
            print(f"projects/{project}/locations/{flag(argv, 'region')}/triggers/{words[2]}-123456")
    elif words[:3] == ["eventarc", "triggers", "describe"]:
        print(f"projects/{project}/subscriptions/eventarc-{flag(argv, 'location')}-{words[3]}-sub-789")
    elif words[:4] == ["storage", "buckets", "notifications", "list"]:
        for note in state["notes"]:
            print(" ".join(note))
    elif words[:4] == ["storage", "buckets", "notifications", "create"]:
        state["notes"].append(
            [
                str(len(state["notes"]) + 1),
                "//pubsub.googleapis.com/" + flag(argv, "topic"),
                flag(argv, "object-prefix"),
            ]
        )
    elif words[:4] == ["storage", "buckets", "notifications", "delete"]:
        state["notes"] = [n for n in state["notes"] if not words[4].endswith(f"/notificationConfigs/{n[0]}")]
    elif words[:2] == ["builds", "submit"]:
        substitutions = dict(pair.split("=", 1) for pair in flag(argv, "substitutions").split(","))
        exists.append(f"image {substitutions['_IMAGE']}")
    elif words[:2] == ["functions", "deploy"]:
        exists.append(f"function {words[2]}")
    elif words[:2] == ["functions", "delete"]:
        exists.remove(f"function {words[2]}")
    elif words[:3] == ["alpha", "monitoring", "policies"]:
        _policies(words, argv, project, exists)
    elif words[-2:-1] == ["describe"] or words[-1:] == ["describe"] or "describe" in words[:4]:
        return 0 if _key(words, project) in exists else _missing(_key(words, project))
    elif "create" in words[:4]:
        exists.append(_key(words, project))
    elif "delete" in words[:4] or words[:2] == ["storage", "rm"]:
        key = _key(words, project)
        if key in exists:
            exists.remove(key)
    return 0


def _key(words: list[str], project: str) -> str:
    """One name per resource, whichever command names it (a service account by id or by email)."""
    verb = next(i for i, w in enumerate(words) if w in ("describe", "create", "delete", "rm"))
    if words[verb] == "rm":  # storage rm --recursive gs://BUCKET removes the bucket
        return f"storage buckets {words[-1]}"
    kind = " ".join(words[:verb])
    name = words[verb + 1]
    if kind == "scheduler jobs" and words[verb] == "create":  # create pubsub NAME: the target type comes first
        name = words[verb + 2]
    if kind == "iam service-accounts" and "@" not in name:
        name = f"{name}@{project}.iam.gserviceaccount.com"
    if kind == "artifacts docker images":
        kind = "image"
    return f"{kind} {name}"


def _policies(words: list[str], argv: list[str], project: str, exists: list[str]) -> None:
    """Alert policies: the API names them itself; a list by display name finds the one created with it."""
    verb = words[3]
    if verb == "create":
        exists.append(f"alert policy {json.loads(Path(flag(argv, 'policy-from-file')).read_text())['displayName']}")
    elif verb == "list":
        display = flag(argv, "filter").removeprefix('displayName="').removesuffix('"')
        if f"alert policy {display}" in exists:
            print(f"projects/{project}/alertPolicies/{quote(display, safe='')}")
    elif verb == "delete" and f"alert policy {unquote(words[4].rsplit('/', 1)[1])}" in exists:
        exists.remove(f"alert policy {unquote(words[4].rsplit('/', 1)[1])}")


def _missing(what: str) -> int:
    print(f"ERROR: (gcloud) NOT_FOUND: {what}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
