"""One pooled keep-alive HTTP session per instance, the timeouts that bound every call, and what an answer means."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3

from relay.errors import BackendBusyError

# A little over 3 s, a multiple of TCP's initial retransmission window (requests' documentation advises it).
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 30.0
# Each thread the functions-framework serves events on may hold one connection per host.
_POOL_SIZE = 32
_QUOTA = re.compile(r"RESOURCE_EXHAUSTED|quota exceeded|rate ?limit exceeded", re.IGNORECASE)
_GRPC_RESOURCE_EXHAUSTED = 8


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts of one request (requests applies the read timeout to each socket read)."""

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT

    @classmethod
    def within(cls, seconds: float) -> Timeouts:
        """Timeouts whose sum stays under `seconds`: a submit started before its deadline ends before the lease."""
        connect = min(CONNECT_TIMEOUT, seconds / 4)
        return cls(connect=connect, read=min(READ_TIMEOUT, seconds * 0.9 - connect))

    @property
    def pair(self) -> tuple[float, float]:
        return (self.connect, self.read)


DEFAULT_TIMEOUTS = Timeouts()


def new_session() -> requests.Session:
    """The session an instance shares between storage, tokens and its backend: keep-alive, no automatic retries."""
    session = requests.Session()
    # With trust_env on, requests reads the proxy variables from os.environ on every request (~600 lookups an
    # event). They are read once here instead: trust_env stays on only where a proxy is set (no_proxy is matched
    # per URL), and a CA bundle named by the environment is taken over as requests would.
    session.trust_env = bool(urllib.request.getproxies())
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def sent_nothing(exc: requests.RequestException) -> bool:
    """True when the request surely never reached the server: no connection was made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause: Any = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps what happened
        return isinstance(cause, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
    return False


def error_detail(response: requests.Response) -> str:
    """The message of a JSON error answer (Google's {"error": {...}} or grpc-gateway's), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('status', '')} {error.get('message', '')}".strip()
        return str(body.get("message") or error or body)[:200]
    return str(body)[:200]


def refused_for_load(response: requests.Response, detail: str) -> BackendBusyError | None:
    """A BackendBusyError when the server refused for load or quota, which creates nothing: a 429, or a 403 or 5xx
    whose body says RESOURCE_EXHAUSTED or that a quota was exceeded (some proxies answer 503 "Quota exceeded").
    A 400's body is never read for this: it may echo the trigger's own words."""
    status = response.status_code
    if status != 429 and status != 403 and status < 500:
        return None
    if status != 429 and not _QUOTA.search(response.text[:4096]) and _grpc_code(response) != _GRPC_RESOURCE_EXHAUSTED:
        return None
    return BackendBusyError(detail, retry_after(response))


def _grpc_code(response: requests.Response) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def retry_after(response: requests.Response) -> float | None:
    """Seconds to wait: the Retry-After header (seconds or an HTTP date), or a google.rpc.RetryInfo detail."""
    header = (response.headers.get("Retry-After") or "").strip()
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None
