"""Locations and URLs as the policy compares them: containment segment by segment, origins, sizes and durations.

Pure functions of text, with no policy in them: the schema reader (relay.policy_reader) checks a policy's locations
with them, and the decisions (relay.policy_decisions) compare a trigger's locations with a tenant's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from relay.config import parse_duration
from relay.naming import split_owned

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)


def within(uri: str, prefix: str) -> bool:
    """`uri` is `prefix` or lies under it, path segment by path segment (gs://b/ab is not under gs://b/a)."""
    base = prefix.rstrip("/")
    if base.endswith(":"):  # a whole scheme: file:///
        return uri.startswith(prefix)
    return uri == base or uri.startswith(base + "/")


def protected_by(uri: str, protected: Sequence[str]) -> str | None:
    """The protected location holding `uri` (whole buckets: a bucket is where IAM draws its lines), if any."""
    for location in protected:
        if not location:
            continue
        scope = _bucket(location) if location.startswith(("gs://", "s3://")) else location
        if within(uri, scope) or within(_as_file(uri), _as_file(scope)):
            return location
    return None


def as_location(uri: str) -> str:
    """A source as a location: an absolute path is the file:// URI the steps read it as."""
    return Path(uri).as_uri() if uri.startswith("/") else uri


def url_within(url: str, prefix: str) -> bool:
    """Same scheme, host and port, and the path under the prefix's path; no credentials in the URL."""
    a, b = urlsplit(url), urlsplit(prefix)
    if a.username or a.password or not same_origin(url, prefix):
        return False
    path = a.path or "/"
    if any(segment in ("..", ".") for segment in path.split("/")) or "%2e" in path.lower() or "\\" in path:
        return False
    base = b.path or "/"
    if base.endswith("/"):
        return path.startswith(base) or path == base.rstrip("/")
    return path == base or path.startswith(base + "/")


def same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    try:
        ports = _port(a.scheme, a.port), _port(b.scheme, b.port)
    except ValueError:  # a port that is not a number
        return False
    return a.scheme == b.scheme and bool(a.hostname) and a.hostname == b.hostname and ports[0] == ports[1]


def parse_size(value: object) -> float | None:
    """Bytes in 1000, '10GiB', '64 MiB' or '1.5GB'; None when it is not a size."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        return float(match.group(1)) * _UNITS[(match.group(2) or "").lower()] if match else None
    return _plain_number(value)


def parse_seconds(value: object) -> float | None:
    """Seconds in 90, '90s', '10m', '2h' or '1d' (the settings' duration syntax); None when it is not a duration."""
    return parse_duration(value) if isinstance(value, str) else _plain_number(value)


def _plain_number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _well_formed_location(uri: str) -> bool:
    scheme, _, rest = uri.partition("://")
    if not rest or scheme not in ("gs", "s3", "file"):
        return False
    if scheme == "file" and not rest.startswith("/"):
        return False  # file://host/... names another machine
    path = rest[1:] if scheme == "file" else rest  # after the root's "/"
    segments = path.removesuffix("/").split("/")  # a folder may end in "/"
    return all(segment not in ("", ".", "..") for segment in segments) and "\\" not in uri and "\n" not in uri


def _bucket(location: str) -> str:
    scheme, _, rest = location.partition("://")
    return f"{scheme}://{rest.partition('/')[0]}"


def _as_file(location: str) -> str:
    return "file://" + location if location.startswith("/") else location


def _prefix_within(prefix: str, allowed: str) -> bool:
    if not allowed:
        return True
    if any(segment in ("..", ".") for segment in prefix.split("/")):
        return False
    return within(prefix.strip("/"), allowed.strip("/"))


def _owned_by(name: str, owner: str) -> bool:
    """`name` is owner/slug with this owner; anything else (the steps refuse it) belongs to no owner."""
    parts = split_owned(name)
    return parts is not None and parts[0] == owner


def _relative_path(path: str) -> bool:
    # "//host/..." is a network-path reference: joined with a base URL it names another host.
    return path.startswith("/") and not path.startswith("//") and "://" not in path and ".." not in path


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)
