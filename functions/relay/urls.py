"""The one rule for where credentials may travel: https, or plain http to this machine (local servers, forwards).

"This machine" is what `ipaddress` calls loopback (all of 127.0.0.0/8, ::1) and the name localhost: the policy, the
function's settings, the CLI and every pipeline step ask here, so none admits a URL another then refuses.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# The one wording of the rule, after "expected" in every refusal.
CREDENTIALS_URL = "https:// (plain http only to this machine: credentials travel over it)"


def is_loopback_host(host: str) -> bool:
    """True for localhost and any loopback address (127.0.0.0/8, ::1); False for every other name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_for_credentials(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host or "")))


def credentials_refusal(where: str, found: str) -> str:
    """The one refusal message: where, the rule, what was found (as the caller may show it)."""
    return f"{where}: expected {CREDENTIALS_URL}, found {found}"
